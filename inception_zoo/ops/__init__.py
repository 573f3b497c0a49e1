"""Jit-compatible detection operations with static shapes: boxes, NMS, RoIAlign and masks (torchvision semantics)."""
from inception_zoo.ops.boxes import (anchors, box_area, box_iou, clip_boxes, decode_boxes, encode_boxes,
                                     level_for_boxes, match, mmdet_level_for_boxes, sample_balanced,
                                     small_boxes_mask)
from inception_zoo.ops.masks import crop_masks, mask_targets, paste_masks
from inception_zoo.ops.nms import batched_nms, nms, soft_nms
from inception_zoo.ops.roi_align import infer_scales, multiscale_roi_align, roi_align

__all__ = [
    "anchors", "batched_nms", "box_area", "box_iou", "clip_boxes", "crop_masks", "decode_boxes", "encode_boxes",
    "infer_scales", "level_for_boxes", "mask_targets", "match", "mmdet_level_for_boxes", "multiscale_roi_align",
    "nms", "paste_masks", "roi_align", "sample_balanced", "small_boxes_mask", "soft_nms",
]
