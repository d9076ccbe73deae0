# Stage 2: each entry's reproduction, at the configured scale. One job uses every core it is given.


rule reproduce:
    input:
        code=experiment_code,
    output:
        metrics="results/{paper}/metrics.json",
        figures=directory("results/{paper}/figures"),
    params:
        experiment=experiment_name,
        overrides=experiment_params,
        scale=SCALE,
    threads: workflow.cores
    resources:
        gpu=1 if SCALE == "gpu" else 0,
    conda:
        "../envs/reproduce.yaml"
    log:
        "logs/reproduce/{paper}.log",
    benchmark:
        "results/{paper}/benchmark.tsv"
    script:
        "scripts/reproduce.py"
