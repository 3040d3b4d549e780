"""``Dropout``: zeroes activations at random while training, identity in eval mode."""
from nn._checks import check_probability
from nn.functional.activation import dropout
from nn.random import get_generator
from nn.modules.module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """Inverted dropout (Srivastava et al., 2014): in training mode each element is
    zeroed with probability ``p`` and the others scaled by ``1 / (1 - p)``; in eval
    mode (``model.eval()``) the input passes unchanged.

    Args:
        p (float): drop probability in [0, 1].
        generator (np.random.Generator or int, optional): source of the masks;
            defaults to the generator seeded by ``nn.manual_seed``.
    """

    def __init__(self, p=0.5, generator=None):
        super().__init__()
        self.p = check_probability(p, "dropout probability p")
        # An int seed becomes one Generator here, so successive masks differ.
        self.generator = None if generator is None else get_generator(generator)

    def forward(self, x):
        return dropout(x, self.p, training=self.training, generator=self.generator)

    def extra_repr(self):
        return f"p={self.p}"
