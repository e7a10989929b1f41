"""Shared fixtures of the integration tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def escnn_exact_svd():
    """escnn 1.0.11 builds the kernel bases of dihedral convolutions with scikit-learn's ``randomized_svd`` when
    scikit-learn is installed, and scikit-learn >= 1.9 rejects the ``np.matrix`` escnn passes it (escnn#112): switch
    escnn to its exact SciPy SVD path (``randomized_svd = None``, what escnn does without scikit-learn) while a test
    module builds its models."""
    escnn = pytest.importorskip("escnn")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(escnn.group._numerical, "randomized_svd", None)
        yield
