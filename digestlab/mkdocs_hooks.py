"""MkDocs hooks: the tags plugin allows exactly the labels of the tag vocabulary."""

from __future__ import annotations

from pathlib import Path

from material.plugins.tags.structure.tag.options import TagSet

from digestlab.papers import load_tags


def on_config(config):
    """Set the tags plugin's `tags_allowed` from config/tags.yaml, the vocabulary's one home."""
    vocabulary = load_tags(Path(config.config_file_path).parent / "config" / "tags.yaml")
    labels = sorted({label for labels in vocabulary.values() for label in labels.values()})
    for name, plugin in config.plugins.items():
        if name.endswith("tags"):
            plugin.config.tags_allowed = TagSet().validate(labels)
    return config
