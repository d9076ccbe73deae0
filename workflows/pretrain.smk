# Stage 2a: the base models experiments stand on, each a job of its own, so that changing an
# analysis reruns the analysis and not the pretraining; a fine-tune of another base waits for
# that base's model file. One job uses every core it is given.


rule pretrain:
    input:
        unpack(parent_model_file),
        code=base_code,
    output:
        "results/{paper}/bases/{base}.pt",
    params:
        experiment=experiment_name,
        values=base_params,
        scale=SCALE,
    threads: EXPERIMENT_THREADS
    resources:
        gpu=EXPERIMENT_GPUS,
        runtime=experiment_runtime_min,
        mem_mb=EXPERIMENT_MEM_MB,
    conda:
        "../envs/reproduce.yaml"
    log:
        "logs/pretrain/{paper}/{base}.log",
    benchmark:
        "results/{paper}/bases/{base}.benchmark.tsv"
    script:
        "scripts/pretrain.py"
