"""What noisy_mean measures, credited to papers: the sample mean, to a paper the workspace's
entries only relate to (so a test can add its entry and watch its page light up), with the
experiment's claim; and the estimate of the entry that runs it, its own method."""

from digestlab.methods import Method, mean_row

METHODS = (
    Method(id="sample-mean", name="Sample mean", paper="2405.05254v2", role="baseline",
           how={"ko": "씨앗마다 표본 평균을 잽니다.", "en": "The sample mean of each seed."},
           claims=("mean-below-bound",)),
    Method(id="own", name="Own estimate", paper="2405.12981", role="proposed",
           how={"ko": "같은 평균입니다.", "en": "The same mean."}),
    Method(id="unmeasured", name="Unmeasured", paper="https://example.org/unmeasured",
           role="baseline", how={"ko": "재지 않습니다.", "en": "Not measured."}),
)
REFERENCE = "own"


def rows(result: dict) -> dict:
    mean, means = {"ko": "평균", "en": "mean"}, result["metrics"]["means"]
    return {"sample-mean": [mean_row(mean, means, "training seeds", better="lower")],
            "own": [mean_row(mean, means, "training seeds")]}
