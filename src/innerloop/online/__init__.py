"""Online and continual meta-learning: learners that keep learning as classes or tasks arrive.

* :class:`FTML` — Follow the Meta-Leader (Finn et al. 2019): a task buffer and MAML updates
  after every task;
* :class:`OML` — Online-aware Meta-Learning (Javed & White 2019): a meta-learned representation,
  frozen online, under a head updated by SGD one image at a time;
* :class:`NaiveFineTuning` — the baseline: supervised pretraining (or none), then online SGD on
  every weight;
* :class:`ClassStream` and :func:`evaluate_stream` — the protocol: seeded streams of unseen
  classes, accuracy on all seen classes after each arrival, forgetting, new-class accuracy and
  learning speed, summarized over seeds with 95% intervals (:func:`summarize_records`).
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
    summarize_records,
)

__all__ = ["FTML", "OML", "VIEWS", "Arrival", "ClassBatches", "ClassStream", "NaiveFineTuning", "OnlineNetwork",
           "OnlineSGDLearner", "StreamLearner", "StreamRecord", "evaluate_stream", "subset", "summarize_records",
           "with_zero_output"]
