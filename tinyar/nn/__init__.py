"""Layers, losses and containers, each with a hand-written backward."""
from .module import Module
from .parameter import FlatBuffer, Parameter
from .container import Sequential
from .linear import Linear
from .activation import GELU, LeakyReLU, ReLU, Sigmoid, Tanh
from .flatten import Flatten
from .normalization import BatchNorm1d, LayerNorm
from .embedding import Embedding
from .dropout import Dropout
from .softmax import LogSoftmax, Softmax
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from .heads import FlatSoftmaxHead
from .hierarchy import ClassHierarchy
from .multilevel import MultiLevelSoftmax
from .multilevel import LevelWeightSchedule, MultiLevelClassifier
from .rnn_cells import GRUCell, LSTMCell, RNNCell
from .recurrent import GRU, LSTM, RNN, LastStep, detach_state
from .conv import Conv1d, Conv2d
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool1d, MaxPool2d
from .normalization2d import BatchNorm2d, Dropout2d
from .attention import CausalSelfAttention, KVCache
from .transformer import TransformerBlock, TransformerCache, TransformerStack
