# digestlab: papers/*.yaml -> arXiv metadata -> base models -> reproductions -> a bilingual
# MkDocs site.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflows/common.smk"
include: "workflows/fetch.smk"
include: "workflows/pretrain.smk"
include: "workflows/reproduce.smk"
include: "workflows/render.smk"


rule all:
    input:
        "site/.built",
    default_target: True
