"""MkDocs hooks: the tags plugin allows exactly the labels of the tag vocabulary."""

from __future__ import annotations

import os
from pathlib import Path

from material.plugins.tags.structure.tag.options import TagSet

from digestlab.papers import load_tags
from digestlab.site import TAGS_ENV


def on_config(config):
    """Set the tags plugin's `tags_allowed` from the vocabulary (config/tags.yaml unless the
    workflow names another file), so the vocabulary has one home."""
    default = Path(config.config_file_path).parent / "config" / "tags.yaml"
    vocabulary = load_tags(os.environ.get(TAGS_ENV, default))
    labels = sorted({label for labels in vocabulary.values() for label in labels.values()})
    for name, plugin in config.plugins.items():
        if name.endswith("tags"):
            plugin.config.tags_allowed = TagSet().validate(labels)
    return config
