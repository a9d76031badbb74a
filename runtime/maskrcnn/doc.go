// Package maskrcnn is flbq's fp32 Mask R-CNN detector in parity with
// torchvision 0.14's MaskRCNN in eval mode, on both flbq backbones (Swin +
// FPN, ViTDet + simple feature pyramid, runtime/model).
//
//	d, err := maskrcnn.Load("swin_t_maskrcnn.safetensors")
//	dets, err := d.Detect(img)              // any image.Image
//	for _, x := range dets {
//		fmt.Println(x.ClassName, x.Score, x.Box, x.Mask.Area())
//		rle := x.Mask.RLE()                 // COCO run-lengths (runtime/cocomask)
//	}
//
// The pieces: runtime/imageio's GeneralizedRCNNTransform preprocessing;
// runtime/model's backbone and pyramid; the learned heads of this package
// (RPNHead, TwoMLPHead + FastRCNNPredictor, MaskRCNNHeads +
// MaskRCNNPredictor on runtime/nn's convolutions and GEMM, read from
// torchvision state_dict names); and runtime/detection's anchors, proposal
// filtering, MultiScaleRoIAlign, post-processing and mask pasting.
//
// # Weights and configuration
//
// One safetensors file holds backbone.*, rpn.* and roi_heads.* tensors
// (F32, F16 or BF16) as torchvision's MaskRCNN.state_dict() names them;
// every tensor is checked for presence, dtype and shape, and tensors
// nobody uses are refused, with errors naming the tensor. The "flbq.config"
// metadata (model.Config) gives the backbone, num_classes, min/max size,
// mean/std and class names (categories, index = label); the RPN and RoI
// settings use torchvision's argument names (see Settings). Head widths
// (representation size, mask head layers) come from the tensor shapes.
//
// # Outputs
//
// A Detection has its box in original-image pixels, label, class name,
// COCO category id, score and a binary Mask of the original image size,
// stored cropped to the pixels its box can cover (paste_masks_in_image
// leaves every other pixel 0), so 100 masks of a 12-megapixel photo stay
// small. Mask.RLE encodes it for COCO results without the full image.
//
// # Limits and bad input
//
// Images larger than Options.MaxPixels (DefaultMaxPixels, 10⁸) or with a
// zero side are refused before any work; images so elongated that a side
// resizes to 0 pixels are refused. Gray, paletted, CMYK and 16-bit images
// are converted to 8-bit RGB as PIL's convert("RGB") does.
//
// # Concurrency
//
// A Detector is safe for concurrent use: calls share only read-only
// weights, and each call splits its convolutions and GEMMs across
// backend.Threads() goroutines.
//
// # Parity
//
// Against tools/refgen/maskrcnn_fixtures.py (tiny random-init MaskRCNNs on
// both backbones, three images including a non-square 150×230 one and a
// grayscale PNG): the same proposals (max |Δ| 4e-4 px), the same
// detections and labels, boxes within 4e-4 px, scores within 2e-5, and
// masks with IoU 1.0 (no pixel differs).
package maskrcnn
