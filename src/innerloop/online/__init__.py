"""Online and continual meta-learning: learners that keep learning as classes or tasks arrive.

* :class:`FTML` — Follow the Meta-Leader (Finn et al. 2019): a task buffer and MAML updates
  after every task;
* :class:`OML` — Online-aware Meta-Learning (Javed & White 2019): a meta-learned representation,
  frozen online, under a head updated by SGD one image at a time;
* :class:`NaiveFineTuning` — the baseline: supervised pretraining (or none), then online SGD on
  every weight;
* :class:`ClassStream` and :func:`evaluate_stream` — the protocol: seeded streams of unseen
  classes, accuracy on all seen classes after each arrival, forgetting, new-class accuracy and
  learning speed, summarized over seeds with 95% Student-t intervals (:func:`summarize_records`),
  and paired differences of two learners on the same streams (:func:`paired_difference`).
"""

from innerloop.online.batches import ClassBatches, subset
from innerloop.online.finetune import NaiveFineTuning
from innerloop.online.ftml import FTML
from innerloop.online.network import OnlineNetwork, with_zero_output
from innerloop.online.oml import OML
from innerloop.online.online_sgd import OnlineSGDLearner
from innerloop.online.stream import (
    VIEWS,
    Arrival,
    ClassStream,
    StreamLearner,
    StreamRecord,
    evaluate_stream,
    paired_difference,
    summarize_records,
)

__all__ = ["FTML", "OML", "VIEWS", "Arrival", "ClassBatches", "ClassStream", "NaiveFineTuning", "OnlineNetwork",
           "OnlineSGDLearner", "StreamLearner", "StreamRecord", "evaluate_stream", "paired_difference", "subset",
           "summarize_records", "with_zero_output"]
