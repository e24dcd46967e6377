import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP spinning makes 2 threads many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Restricted:
    """A dataset whose subsets are restricted to some videos (everything else passes through)."""

    def __init__(self, ds, keep):
        self._ds, self._keep = ds, set(keep)

    def subset(self, name):
        return [v for v in self._ds.subset(name) if v.id in self._keep]

    def __getattr__(self, k):
        return getattr(self._ds, k)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """The `tiny` simulated dataset (seed 0, dim 128), generated once per test session; read-only."""
    from noco.data.synth import generate

    return generate("tiny", tmp_path_factory.mktemp("tiny_shared") / "data", seed=0, progress=False)
