"""A toy space with a known optimum, registered once for the tests: widths (16 channels, 64 units)
beat bottlenecks (1 channel, 2 units) by a wide margin on digits."""

from hwnas.space import SPACES, Choice, SearchSpace
from hwnas.space.ops import Act, Conv, Flatten, Linear, MaxPool, Ref

TOY = "toy-optimum"
OPTIMUM = {"c": 16, "n": 64}


def toy_space() -> SearchSpace:
    return SearchSpace(
        name=TOY, input_shape=(1, 28, 28), num_classes=10, description="sanity task",
        choices=(Choice("c", (1, 16)), Choice("n", (64, 2))),
        layers=(Conv("conv", out=Ref("c"), k=3), Act("act", "relu"), MaxPool("pool", 4), Flatten("flat"),
                Linear("fc1", out=Ref("n")), Act("act2", "relu"), Linear("fc2", out=10)),
        units=(("conv", ("conv", "act", "pool")), ("fc", ("flat", "fc1", "act2", "fc2"))),
    )


if TOY not in SPACES:
    SPACES.register(TOY)(toy_space)
