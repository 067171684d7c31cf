"""A rerun's table 1 against a committed reference: inside its 95% intervals or not."""
import pandas as pd
import pytest

from quadranet.report.reproduce import compare


def runs(hardware, accs, method="adapt"):
    return pd.DataFrame({"hardware": hardware, "exp": "e1", "status": "done", "backbone": "test_convnext",
                         "variant": "transfer", "method": method, "seed": range(len(accs)),
                         "run": [f"{hardware}/{method}/{i}" for i in range(len(accs))], "acc1": accs})


@pytest.mark.parametrize("local, reproduced", [
    ([80.0, 80.4, 79.8], True),  # mean 80.07 inside the reference's interval
    ([84.0, 84.2, 83.9], False),  # 4 pp above it
    ([80.1], True),  # one local seed still has a mean
])
def test_rerun_inside_the_reference_interval(local, reproduced):
    table = compare(pd.concat([runs("this machine (CPU, 2 cores)", local), runs("ref", [79.5, 80.5, 80.0])]), "ref")
    assert table["reproduced"].tolist() == [reproduced]
    assert table["reference_lo"].iloc[0] < 80.0 < table["reference_hi"].iloc[0]


def test_one_seed_reference_is_not_judged_and_unknown_reference_is_named():
    both = pd.concat([runs("this machine (CPU, 2 cores)", [80.0, 81.0]), runs("ref", [80.0])])
    assert compare(both, "ref")["reproduced"].tolist() == [None]
    with pytest.raises(ValueError, match="references collected: \\['ref'\\]"):
        compare(both, "other")
