"""`python -m sae_atlas.cli` (as torchrun starts it) runs the `sae-atlas` command."""

from sae_atlas.cli import main

main()
