"""``uniseg3d_demo`` (``make demo``): the whole mission on a generated room; ``main`` runs it."""
