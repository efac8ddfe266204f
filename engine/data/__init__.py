"""Datasets: a Slakh2100 reader and a FluidSynth renderer of Slakh-format tracks."""

from engine.data.classes import MAIN_CLASSES, program_class
from engine.data.render import render_dataset
from engine.data.slakh import SkippedTrack, SlakhDataset, Stem, Track

__all__ = ["MAIN_CLASSES", "SkippedTrack", "SlakhDataset", "Stem", "Track", "program_class",
           "render_dataset"]
