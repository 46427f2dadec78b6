"""Layers, losses and containers, each with a hand-written backward."""
from .module import Module
from .parameter import FlatBuffer, Parameter
from .container import Sequential
from .linear import Linear
from .activation import GELU, LeakyReLU, ReLU, Sigmoid, Tanh
from .flatten import Flatten
