"""``Sequential``: modules applied in order; backward walks them in reverse."""
from .module import Module


class Sequential(Module):
    """y = f_n(... f_2(f_1(x))); dL/dx = J_1^T (J_2^T (... J_n^T dL/dy)).

    Children are named "0", "1", ... as in PyTorch, so state dicts match.
    """

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a Module")
            setattr(self, str(i), layer)

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x

    def backward(self, grad_out):
        for layer in reversed(self._modules.values()):
            grad_out = layer.backward(grad_out)
        return grad_out
