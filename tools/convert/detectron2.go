package convert

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/tools/torchckpt"
)

// detectron2's ViTDet Mask R-CNN (projects/ViTDet,
// configs/common/models/mask_rcnn_vitdet.py): the backbone keeps
// detectron2's names (backbone.net.*, backbone.simfp_*; flbq's family
// "vitdet" reads them as they are); the heads are renamed onto
// torchvision's (RPNHead with conv_depth 2, FastRCNNConvFCHead,
// MaskRCNNHeads with norms, MaskRCNNPredictor), the background class
// moved from last to first.

var (
	d2Block   = regexp.MustCompile(`^backbone\.net\.blocks\.(\d+)\.`)
	d2RPNConv = regexp.MustCompile(`^proposal_generator\.rpn_head\.conv\.conv(\d+)\.(weight|bias)$`)
	d2BoxConv = regexp.MustCompile(`^roi_heads\.box_head\.conv(\d+)\.(weight|bias|norm\.weight|norm\.bias)$`)
	d2BoxFC   = regexp.MustCompile(`^roi_heads\.box_head\.fc(\d+)\.(weight|bias)$`)
	d2MaskFCN = regexp.MustCompile(`^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias|norm\.weight|norm\.bias)$`)
)

// vitdetArch is what a ViTDet checkpoint's tensors say.
type vitdetArch struct {
	patch, dim, depth, heads, mlp int
	pretrainGrid                  int
	posCls                        bool
	window, relGrid               int
	windowBlocks                  []int
	relPos                        bool
	outC, numClasses              int
	boxConvs                      int
}

func inferViTDet(ts map[string]*safetensors.Tensor) (*vitdetArch, error) {
	need := func(name string, rank int) (*safetensors.Tensor, error) {
		return needTensor(ts, name, rank, "a detectron2 ViTDet Mask R-CNN")
	}
	a := &vitdetArch{}
	pe, err := need("backbone.net.patch_embed.proj.weight", 4)
	if err != nil {
		return nil, err
	}
	if pe.Shape[1] != 3 || pe.Shape[2] != pe.Shape[3] {
		return nil, fmt.Errorf("key %q: shape %v: want 3 input channels and a square patch", "backbone.net.patch_embed.proj.weight", pe.Shape)
	}
	a.dim, a.patch = pe.Shape[0], pe.Shape[2]
	pos, err := need("backbone.net.pos_embed", 3)
	if err != nil {
		return nil, err
	}
	n := pos.Shape[1]
	for g := 1; g*g <= n; g++ {
		if g*g == n {
			a.pretrainGrid = g
		} else if g*g+1 == n {
			a.pretrainGrid, a.posCls = g, true
		}
	}
	if a.pretrainGrid == 0 || pos.Shape[2] != a.dim {
		return nil, fmt.Errorf("key %q: shape %v is no square grid of %d-wide embeddings", "backbone.net.pos_embed", pos.Shape, a.dim)
	}
	blocks := map[int]bool{}
	for name := range ts {
		if m := d2Block.FindStringSubmatch(name); m != nil {
			i, _ := strconv.Atoi(m[1])
			if i > 1024 {
				return nil, fmt.Errorf("key %q: block index out of range", name)
			}
			blocks[i] = true
		}
	}
	for a.depth = 0; blocks[a.depth]; a.depth++ {
	}
	if a.depth == 0 || len(blocks) != a.depth {
		return nil, fmt.Errorf("missing keys backbone.net.blocks.%d.* (blocks are numbered 0..%d)", a.depth, len(blocks)-1)
	}
	fc1, err := need("backbone.net.blocks.0.mlp.fc1.weight", 2)
	if err != nil {
		return nil, err
	}
	a.mlp = fc1.Shape[0]
	rows := make([]int, a.depth)
	if _, ok := ts["backbone.net.blocks.0.attn.rel_pos_h"]; ok {
		a.relPos = true
		for i := range rows {
			t, err := need(fmt.Sprintf("backbone.net.blocks.%d.attn.rel_pos_h", i), 2)
			if err != nil {
				return nil, err
			}
			rows[i] = t.Shape[0]
			if a.heads == 0 {
				if t.Shape[1] <= 0 || a.dim%t.Shape[1] != 0 {
					return nil, fmt.Errorf("key %q: head width %d does not divide %d", fmt.Sprintf("backbone.net.blocks.%d.attn.rel_pos_h", i), t.Shape[1], a.dim)
				}
				a.heads = a.dim / t.Shape[1]
			}
		}
		// Window blocks have the smaller tables (2·window-1 rows), global
		// ones 2·(img_size/patch)-1.
		big, small := 0, 1<<30
		for _, r := range rows {
			big, small = max(big, r), min(small, r)
		}
		a.relGrid = (big + 1) / 2
		if small < big {
			a.window = (small + 1) / 2
			for i, r := range rows {
				if r == small {
					a.windowBlocks = append(a.windowBlocks, i)
				} else if r != big {
					return nil, fmt.Errorf("key %q: %d rows, neither the window tables' %d nor the global ones' %d", fmt.Sprintf("backbone.net.blocks.%d.attn.rel_pos_h", i), r, small, big)
				}
			}
		}
	}
	lat, err := need("backbone.simfp_4.0.weight", 4)
	if err != nil {
		return nil, err
	}
	a.outC = lat.Shape[0]
	cls, err := need("roi_heads.box_predictor.cls_score.weight", 2)
	if err != nil {
		return nil, err
	}
	a.numClasses = cls.Shape[0] - 1
	if a.numClasses < 1 {
		return nil, fmt.Errorf("key %q: shape %v: no foreground class", "roi_heads.box_predictor.cls_score.weight", cls.Shape)
	}
	for a.boxConvs = 0; ts[fmt.Sprintf("roi_heads.box_head.conv%d.weight", a.boxConvs+1)] != nil; a.boxConvs++ {
	}
	return a, nil
}

// d2Name maps a detectron2 key to flbq's, with the rewrite it needs;
// ok false for keys a ViTDet Mask R-CNN does not have.
func d2Name(name string, a *vitdetArch) (string, transform, bool) {
	idx := func(s string) int { i, _ := strconv.Atoi(s); return i }
	switch {
	case strings.HasPrefix(name, "backbone.net.") || strings.HasPrefix(name, "backbone.simfp_"):
		return name, nil, true
	case d2RPNConv.MatchString(name):
		m := d2RPNConv.FindStringSubmatch(name)
		return fmt.Sprintf("rpn.head.conv.%d.0.%s", idx(m[1]), m[2]), nil, true
	case strings.HasPrefix(name, "proposal_generator.rpn_head.objectness_logits."):
		return "rpn.head.cls_logits." + strings.TrimPrefix(name, "proposal_generator.rpn_head.objectness_logits."), nil, true
	case strings.HasPrefix(name, "proposal_generator.rpn_head.anchor_deltas."):
		return "rpn.head.bbox_pred." + strings.TrimPrefix(name, "proposal_generator.rpn_head.anchor_deltas."), nil, true
	case d2BoxConv.MatchString(name):
		m := d2BoxConv.FindStringSubmatch(name)
		i := idx(m[1]) - 1
		if strings.HasPrefix(m[2], "norm.") {
			return fmt.Sprintf("roi_heads.box_head.%d.1.%s", i, strings.TrimPrefix(m[2], "norm.")), nil, i >= 0
		}
		return fmt.Sprintf("roi_heads.box_head.%d.0.%s", i, m[2]), nil, i >= 0
	case d2BoxFC.MatchString(name):
		m := d2BoxFC.FindStringSubmatch(name)
		j := idx(m[1]) - 1
		// FastRCNNConvFCHead: convs 0..n-1, Flatten n, then (Linear, ReLU) pairs.
		return fmt.Sprintf("roi_heads.box_head.%d.%s", a.boxConvs+1+2*j, m[2]), nil, j >= 0
	case strings.HasPrefix(name, "roi_heads.box_predictor.cls_score."):
		return name, backgroundFirst(a.numClasses), true
	case strings.HasPrefix(name, "roi_heads.box_predictor.bbox_pred."):
		return name, withBackgroundRows(a.numClasses, 4), true
	case d2MaskFCN.MatchString(name):
		m := d2MaskFCN.FindStringSubmatch(name)
		i := idx(m[1]) - 1
		if strings.HasPrefix(m[2], "norm.") {
			return fmt.Sprintf("roi_heads.mask_head.%d.1.%s", i, strings.TrimPrefix(m[2], "norm.")), nil, i >= 0
		}
		return fmt.Sprintf("roi_heads.mask_head.%d.0.%s", i, m[2]), nil, i >= 0
	case strings.HasPrefix(name, "roi_heads.mask_head.deconv."):
		return "roi_heads.mask_predictor.conv5_mask." + strings.TrimPrefix(name, "roi_heads.mask_head.deconv."), nil, true
	case strings.HasPrefix(name, "roi_heads.mask_head.predictor."):
		return "roi_heads.mask_predictor.mask_fcn_logits." + strings.TrimPrefix(name, "roi_heads.mask_head.predictor."), withBackgroundRows(a.numClasses, 1), true
	}
	return "", nil, false
}

// detectron2Settings are ViTDet's inference settings
// (configs/common/models/mask_rcnn_vitdet.py, mask_rcnn_fpn.py,
// coco_loader_lsj.py): ResizeShortestEdge(1024, max 1024) and a square
// pad of 1024, RGB with detectron2's mean/std, unrounded anchors on fixed
// strides, RPN 1000/1000 at 0.7 dropping empty boxes, ROIAlignV2
// (aligned, adaptive sampling), no small-box filter, detectron2's mask
// pasting (grid_sample, >= 0.5).
func detectron2Settings() map[string]any {
	return map[string]any{
		"min_size": 1024, "max_size": 1024, "square_pad": 1024, "resize": "pil",
		"image_mean":             []float64{123.675 / 255, 116.28 / 255, 103.53 / 255},
		"image_std":              []float64{58.395 / 255, 57.12 / 255, 57.375 / 255},
		"anchor_sizes":           [][]float64{{32}, {64}, {128}, {256}, {512}},
		"aspect_ratios":          [][]float64{{0.5, 1, 2}, {0.5, 1, 2}, {0.5, 1, 2}, {0.5, 1, 2}, {0.5, 1, 2}},
		"anchor_round":           false,
		"anchor_strides":         []int{4, 8, 16, 32, 64},
		"rpn_pre_nms_top_n_test": 1000, "rpn_post_nms_top_n_test": 1000, "rpn_nms_thresh": 0.7,
		"rpn_score_thresh": 0.0, "rpn_min_size": 0.0, "rpn_min_size_strict": true,
		"roi_sampling_ratio": 0, "roi_aligned": true, "roi_strides": []int{4, 8, 16, 32},
		"box_score_thresh": 0.05, "box_nms_thresh": 0.5, "box_detections_per_img": 100, "box_min_size": 0.0, "box_drop_empty": true,
		"box_delta_clamp": "upper", "mask_thresh": 0.5, "mask_paste": "grid_sample",
	}
}

// convertViTDet maps a detectron2 ViTDet checkpoint.
func convertViTDet(ck *torchckpt.Checkpoint, overrides []byte, warn func(string)) ([]safetensors.Tensor, map[string]any, map[string]string, error) {
	byName, err := checkpointTensors(ck)
	if err != nil {
		return nil, nil, nil, err
	}
	a, err := inferViTDet(byName)
	if err != nil {
		return nil, nil, nil, err
	}
	srcOf := map[string]string{}
	var out []safetensors.Tensor
	for _, t := range ck.Tensors {
		dst, fn, ok := d2Name(t.Name, a)
		if !ok {
			return nil, nil, nil, fmt.Errorf("unexpected key %q (not part of a detectron2 ViTDet Mask R-CNN)", t.Name)
		}
		c := *byName[t.Name]
		c.Name = dst
		if fn != nil {
			if c.F32 == nil {
				return nil, nil, nil, fmt.Errorf("key %q: dtype %s, want a floating-point tensor", t.Name, t.DType)
			}
			if err := fn(&c); err != nil {
				return nil, nil, nil, fmt.Errorf("key %q: %w", t.Name, err)
			}
		}
		srcOf[dst] = t.Name
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	cfg := detectron2Settings()
	relPos := a.relPos
	for k, v := range map[string]any{
		"family": "vitdet", "task": "detection", "patch_size": a.patch, "hidden_dim": a.dim, "num_layers": a.depth,
		"num_heads": a.heads, "mlp_dim": a.mlp, "pretrain_image_size": a.pretrainGrid * a.patch, "pos_embed_cls_token": a.posCls,
		"image_size": a.relGrid * a.patch, "window_size": a.window, "window_block_indexes": a.windowBlocks, "use_rel_pos": relPos,
		"out_channels": a.outC, "num_classes": a.numClasses + 1,
	} {
		cfg[k] = v
	}
	if !relPos {
		warn("no relative-position tables: give num_heads, image_size, window_size and window_block_indexes with --config")
		cfg["image_size"] = a.pretrainGrid * a.patch
	}
	names, ids := classNames(ck.Classes, a.numClasses, warn)
	cfg["categories"], cfg["category_ids"] = names, ids
	if err := mergeOverrides(cfg, overrides); err != nil {
		return nil, nil, nil, err
	}
	return out, cfg, srcOf, nil
}
