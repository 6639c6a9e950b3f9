"""A stand-in for a pip-installed package that adds families to jaxtrain through entry points
(see ``entry_points.txt``); tests install it into a temporary site directory."""
