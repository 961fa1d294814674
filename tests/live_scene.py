"""The live tests' scene: a model's gallery of test classes and a video of held-out clips back to back,
and what the recorded file gives (classify --stream's spans and an EventBuilder over them), the reference
a live source is compared with. The fixture is registered in conftest.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sst_edge.data.encode import write_video
from sst_edge.device.datasets import load_splits
from sst_edge.device.decoders import make_decoder
from sst_edge.runtime import verbs
from sst_edge.runtime.classify import Classifier
from sst_edge.runtime.engine import FewShotRuntime
from sst_edge.runtime.gallery import Gallery
from sst_edge.runtime.live.events import EventBuilder, SpanDecision
from sst_edge.runtime.stream import stream_video

FPS = 12
SPAN, STRIDE = 16 / FPS, 8 / FPS  # one clip, half a clip


@pytest.fixture(scope="module")
def live_scene(exported_model: Path, synth_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """A gallery of 4 test classes (5 clips each), a video of held-out clips of 3 of them back to back,
    and one clip of the 4th class (enrolled later by the reload test)."""
    rt = FewShotRuntime(exported_model)
    tmp = tmp_path_factory.mktemp("live")
    test = load_splits(synth_dataset)["test"]
    classes = test.classes[:4]
    for c in classes[:3]:
        verbs.enroll(rt, tmp / "g", c, test.clips[c][:5], progress=False)
    dec = make_decoder("pyav")
    frames = [dec.read(p, range(dec.info(p).num_frames)) for c in classes[:3] for p in test.clips[c][5:7]]
    video = write_video(tmp / "long.mp4", np.concatenate(frames), fps=FPS, crf=18)
    return rt, tmp / "g", video, test.clips[classes[3]][:5], classes


def recorded(rt: FewShotRuntime, gallery: Path, video: Path) -> tuple[list, list[dict]]:
    """The recorded file's spans (classify --stream's generator) and the events an EventBuilder makes
    of them."""
    cls = Classifier.from_gallery(Gallery.open(gallery, rt.card), ood=rt.ood, ood_why=rt.ood_why)
    spans = list(stream_video(rt, cls, video, SPAN, STRIDE))
    b = EventBuilder("f", model=rt.card.sha256)
    events = [e for s in spans for e in b.update(SpanDecision(s.start_s, s.end_s, s.label, s.confidence, 0.0,
                                                              s.top, s.score, cls.score_threshold, s.why))]
    return spans, events + b.close("source ended")

