// Package detection holds the backbone-independent parts of torchvision's
// Mask R-CNN inference (torchvision 0.14, eval mode) on plain float32 slices
// with explicit shapes:
//
//   - AnchorGenerator: per-level cell anchors (rounded half to even, as
//     torch.round) shifted over each feature map with integer strides
//     image_size // feature_size.
//   - BoxCoder: decode/encode with weights, the clamp of dw/dh at
//     log(1000/16); ClipBoxesToImage, RemoveSmallBoxes.
//   - NMS, BatchedNMS, TopK with torchvision's CPU semantics.
//   - FilterProposals: the RegionProposalNetwork's eval-mode post-processing.
//   - RoIAlign (torchvision's CPU kernel, bit for bit in its arithmetic) and
//     MultiScaleRoIAlign with the FPN LevelMapper.
//   - PostprocessDetections: RoIHeads.postprocess_detections.
//   - MaskProbs, PasteMasksInImage, ResizeBoxes: the mask branch's
//     post-processing and GeneralizedRCNNTransform.postprocess;
//     PasteMaskRegion pastes into the box's pixels only (Config.CropMasks
//     makes Run return masks cropped that way, as BinaryMask).
//   - Run: the whole eval-mode pipeline around a Heads implementation
//     (runtime/maskrcnn has the learned one); heads that also implement
//     LabelMasker compute mask logits for the predicted class only, and
//     Config.Trace reports stage boundaries for timing.
//
// RoIAlign in MultiScaleRoIAlign.Apply and the per-class NMS of
// BatchedNMS's per-category path run across backend.Threads() goroutines; each
// RoI's and each class's arithmetic is unchanged.
//
// Boxes are flat []float32 of length 4·n in (x1, y1, x2, y2) order. Feature
// maps are CHW float32 (FeatureMap). Every function validates the lengths it
// is given and returns an error instead of panicking.
//
// Ordering and ties. torchvision's CPU nms sorts scores with a stable
// descending sort (scores.sort(stable=True, descending=True)), so equal
// scores keep their input order; NMS here does the same, with NaN sorted
// first as torch does. TopK returns the k largest in descending order with
// ties broken by the lower index (torch.topk leaves tie order unspecified;
// it only matters when objectness logits are exactly equal).
//
// Floating point. Every expression follows torchvision's order of float32
// operations; products are explicitly rounded to float32 before sums so the
// Go compiler cannot fuse them into FMAs. Transcendentals (exp, log2,
// sigmoid) are computed in float64 and rounded, which can differ from
// PyTorch's SLEEF-vectorised versions by one ulp.
package detection

// Parity with torchvision 0.14 (testdata goldens from
// tools/refgen/detection_ops_goldens.py and detection_pipeline_goldens.py):
// NMS and batched NMS keep lists, anchors, RoIAlign and MultiScaleRoIAlign
// outputs and level assignments are identical; decoded boxes differ by at
// most 3e-5 px and scores by 6e-8; pasted mask probabilities by at most
// 9e-7 (the bilinear resize's float rounding differs from ATen's by an ulp),
// binary masks identical. The end-to-end replay of a torchvision MaskRCNN
// (Run with the recorded head outputs) reproduces proposals, pooled
// features, boxes, scores, labels and masks exactly.
