"""Detection on a quadratized backbone (claim C4 of arXiv 2405.03192): torchvision Mask R-CNN / FCOS /
RetinaNet over a timm `features_only` backbone with a feature pyramid, COCO data read with pycocotools,
COCOeval box and mask AP, and the embedded Fashion-MNIST canvas set.

    quadranet detect train --out runs/det/adapt method=adapt model.pretrained=offline
    quadranet detect train --out runs/det/scratch                       # random init, first-order
    quadranet detect train --out runs/det/fcos model.detector=fcos method=finetune model.pretrained=offline
    quadranet detect train --preset coco_1x --out runs/coco/adapt data.root=/data/coco method=adapt \\
        model.pretrained=offline
    quadranet detect eval --run runs/det/adapt [data.eval_limit=500]
    quadranet detect data                                                # write the canvas set, print where

Module for module as `quadranet.classify`: config (run config, presets), data (where the data is, train and eval
sets, batches), model (detectors), train (`train`, `train_one_epoch`), evaluate (`evaluate`, `evaluate_run`:
COCOeval), cli; and the two data sources, coco (the COCO reader) and synthetic (the canvas set). They import
torchvision and pycocotools on first use; `quadranet.detection.cli` stays light.
"""
__all__ = ["cli", "coco", "config", "data", "evaluate", "model", "synthetic", "train"]
