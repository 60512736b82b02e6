"""Download the intent datasets from their published repositories, pinned to the commits that
``../shared/data/*/MANIFEST.md`` describes, into ``<data root>/<dataset>/`` in the layout the
readers of :mod:`innerloop.data.intents` expect.

* CLINC150: ``clinc/oos-eval`` at ``828f809``, ``data/data_full.json`` and ``data/domains.json``.
* BANKING77: ``PolyAI-LDN/task-specific-datasets`` at ``57ec275``, ``banking_data/`` (``train.csv``,
  ``test.csv``, ``categories.json``).
* HWU64: ``xliuhw/NLU-Evaluation-Data`` at ``f6071b4``, fold 1 of the authors' cross-validation:
  ``trainset/<label>.csv`` → ``train/`` and ``testset/csv/<label>.csv`` → ``test/``.

The CLINC150 and BANKING77 files are checked against their md5 sums; HWU64's 128 small files are
checked by the reader (64 labels, the published utterance counts). A file already present is
never fetched again; a failed download leaves no partial file and says where to put the files.
"""

from __future__ import annotations

from pathlib import Path

from innerloop.data.download import DownloadFailed, fetch
from innerloop.data.paths import resolve_data_root
from innerloop.errors import DataError

GITHUB = "https://raw.githubusercontent.com"
CLINC150_BASE = f"{GITHUB}/clinc/oos-eval/828f8093932c8fe6ca7936c3d2e52903b1c523de/data"
BANKING77_BASE = f"{GITHUB}/PolyAI-LDN/task-specific-datasets/57ec275d8078af65b7731c2a98be812d844a6d6b/banking_data"
HWU64_BASE = (f"{GITHUB}/xliuhw/NLU-Evaluation-Data/f6071b496b17d71e6eb43f543af0707f4ff30557/CrossValidation/"
              f"autoGeneFromRealAnno/autoGene_2018_03_22-13_01_25_169/CrossValidation/KFold_1")
HWU64_LABEL_NAMES = (
    "alarm_query alarm_remove alarm_set audio_volume_down audio_volume_mute audio_volume_up "
    "calendar_query calendar_remove calendar_set cooking_recipe datetime_convert datetime_query "
    "email_addcontact email_query email_querycontact email_sendemail general_affirm "
    "general_commandstop general_confirm general_dontcare general_explain general_joke general_negate "
    "general_praise general_quirky general_repeat iot_cleaning iot_coffee iot_hue_lightchange "
    "iot_hue_lightdim iot_hue_lightoff iot_hue_lighton iot_hue_lightup iot_wemo_off iot_wemo_on "
    "lists_createoradd lists_query lists_remove music_likeness music_query music_settings news_query "
    "play_audiobook play_game play_music play_podcasts play_radio qa_currency qa_definition qa_factoid "
    "qa_maths qa_stock recommendation_events recommendation_locations recommendation_movies social_post "
    "social_query takeaway_order takeaway_query transport_query transport_taxi transport_ticket "
    "transport_traffic weather_query").split()


def intent_sources(dataset: str) -> list[tuple[str, str, str | None]]:
    """``(url, path inside <root>/<dataset>/, md5 or None)`` of every file of ``dataset``."""
    if dataset == "clinc150":
        return [(f"{CLINC150_BASE}/data_full.json", "data_full.json", "30c29dc6ab78edf3b5dfa640be204cde"),
                (f"{CLINC150_BASE}/domains.json", "domains.json", "9beee9d0f36e07e914c1e3a626bdcb4a")]
    if dataset == "banking77":
        return [(f"{BANKING77_BASE}/train.csv", "train.csv", "cec64185f4197906aabce0781ef9a19b"),
                (f"{BANKING77_BASE}/test.csv", "test.csv", "8dcd9dc31b686c75ec1f24bf23c140cb"),
                (f"{BANKING77_BASE}/categories.json", "categories.json", "8312ff01430af97fba5a113b7a490269")]
    if dataset == "hwu64":
        return ([(f"{HWU64_BASE}/trainset/{label}.csv", f"train/{label}.csv", None) for label in HWU64_LABEL_NAMES]
                + [(f"{HWU64_BASE}/testset/csv/{label}.csv", f"test/{label}.csv", None) for label in HWU64_LABEL_NAMES])
    raise ValueError(f"no download source for '{dataset}'; choose clinc150, banking77 or hwu64")


def ensure_intent_files(dataset: str, root: str | Path | None = None, download: bool = True) -> Path:
    """``<root>/<dataset>``, downloading whatever file of the dataset is missing there."""
    folder = resolve_data_root(root) / dataset
    missing = [(url, name, md5) for url, name, md5 in intent_sources(dataset) if not (folder / name).is_file()]
    if not missing:
        return folder
    if not download:
        raise DataError(f"{dataset}: {len(missing)} file(s) missing in {folder} (e.g. {missing[0][1]}) and "
                        f"download is off; put the official files there or allow the download.")
    for url, name, md5 in missing:
        try:
            fetch(url, folder / name, md5)
        except DownloadFailed as error:
            raise DataError(f"{dataset}: {error} Put the official files in {folder} (see the dataset's "
                            f"MANIFEST.md for the layout), or point --data-root / INNERLOOP_DATA at a "
                            f"folder whose {dataset}/ holds them.") from None
    return folder
