"""The vocoders' definitions, their checkpoint layouts and the mels they take: shared by export,
serving and validate, below all of them."""
