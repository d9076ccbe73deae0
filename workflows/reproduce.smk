# Stage 2b: each entry's reproduction, at the configured scale, on the base models it stands on.
# One job uses every core it is given.


rule reproduce:
    input:
        unpack(base_model_files),
        code=experiment_code,
    output:
        metrics="results/{paper}/metrics.json",
        figures=directory("results/{paper}/figures"),
    params:
        experiment=experiment_name,
        values=experiment_params,
        scale=SCALE,
        bases=base_names,
    threads: EXPERIMENT_THREADS
    resources:
        gpu=EXPERIMENT_GPUS,
        runtime=experiment_runtime_min,
        mem_mb=EXPERIMENT_MEM_MB,
    conda:
        "../envs/reproduce.yaml"
    log:
        "logs/reproduce/{paper}.log",
    benchmark:
        "results/{paper}/benchmark.tsv"
    script:
        "scripts/reproduce.py"
