"""sae-atlas: the shape of a chat model in persona space, and its attractors, mapped with SAEs."""

__version__ = "0.1.0"
