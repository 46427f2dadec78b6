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

    skips_input_grad = True

    def backward(self, grad_out, input_grad=True):
        """Backward through every layer in reverse order.

        ``input_grad=False``: the caller does not need dL/dx (x is the data), so
        the first layer may skip computing it; returns None then.
        """
        layers = list(self._modules.values())
        for i in range(len(layers) - 1, 0, -1):
            grad_out = layers[i].backward(grad_out)
        if not layers:
            return grad_out
        if not input_grad and layers[0].skips_input_grad:
            return layers[0].backward(grad_out, input_grad=False)
        grad_in = layers[0].backward(grad_out)
        return grad_in if input_grad else None
