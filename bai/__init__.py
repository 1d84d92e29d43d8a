"""bai: a Trio-native implementation of the Backend.AI GPU cluster platform."""

__version__ = "0.1.0"
