# QuadraNet V2 reproduction workflow (placeholder until the workflow issue lands: conversion reports only).
BACKBONES = ["convnext_atto", "resnet18", "efficientnet_lite0"]


rule all:
    input:
        expand("results/conversion/{backbone}.csv", backbone=BACKBONES),


rule conversion_report:
    output:
        "results/conversion/{backbone}.csv",
    log:
        "results/logs/conversion_{backbone}.log",
    shell:
        "quadranet report --model {wildcards.backbone} --ranks 1 4 8 --out {output} > {log} 2>&1"
