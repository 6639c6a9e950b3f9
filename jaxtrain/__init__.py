"""jaxtrain: a JAX research toolkit for training models."""
