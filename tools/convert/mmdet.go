package convert

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/tools/torchckpt"
)

// swinLayout is how an mmdetection-style Swin Mask R-CNN names its
// tensors. mmdetection 2.x (mmdet/models/backbones/swin.py) and the
// official Swin-Transformer-Object-Detection fork of mmdetection 2.11
// (mmdet/models/backbones/swin_transformer.py) share the neck and head
// names and differ in the backbone.
type swinLayout struct {
	source     Source
	patchEmbed string // the patch-embedding convolution
	stages     string // prefix of stage i: <stages>.<i>
	// blockKeys maps a block's source suffix to torchvision's.
	blockKeys [][2]string
	// unfold: PatchMerging concatenates the 2×2 neighbourhood in
	// nn.Unfold's order, channel-major (mmdetection), rather than
	// torchvision's x0,x1,x2,x3 blocks.
	unfold bool
}

var (
	mmdetLayout = swinLayout{
		source: MMDet, patchEmbed: "backbone.patch_embed.projection", stages: "backbone.stages",
		blockKeys: [][2]string{
			{"norm1.weight", "norm1.weight"}, {"norm1.bias", "norm1.bias"},
			{"attn.w_msa.qkv.weight", "attn.qkv.weight"}, {"attn.w_msa.qkv.bias", "attn.qkv.bias"},
			{"attn.w_msa.proj.weight", "attn.proj.weight"}, {"attn.w_msa.proj.bias", "attn.proj.bias"},
			{"attn.w_msa.relative_position_bias_table", "attn.relative_position_bias_table"},
			{"attn.w_msa.relative_position_index", "attn.relative_position_index"},
			{"norm2.weight", "norm2.weight"}, {"norm2.bias", "norm2.bias"},
			{"ffn.layers.0.0.weight", "mlp.0.weight"}, {"ffn.layers.0.0.bias", "mlp.0.bias"},
			{"ffn.layers.1.weight", "mlp.3.weight"}, {"ffn.layers.1.bias", "mlp.3.bias"},
		},
		unfold: true,
	}
	officialLayout = swinLayout{
		source: SwinOfficial, patchEmbed: "backbone.patch_embed.proj", stages: "backbone.layers",
		blockKeys: [][2]string{
			{"norm1.weight", "norm1.weight"}, {"norm1.bias", "norm1.bias"},
			{"attn.qkv.weight", "attn.qkv.weight"}, {"attn.qkv.bias", "attn.qkv.bias"},
			{"attn.proj.weight", "attn.proj.weight"}, {"attn.proj.bias", "attn.proj.bias"},
			{"attn.relative_position_bias_table", "attn.relative_position_bias_table"},
			{"attn.relative_position_index", "attn.relative_position_index"},
			{"norm2.weight", "norm2.weight"}, {"norm2.bias", "norm2.bias"},
			{"mlp.fc1.weight", "mlp.0.weight"}, {"mlp.fc1.bias", "mlp.0.bias"},
			{"mlp.fc2.weight", "mlp.3.weight"}, {"mlp.fc2.bias", "mlp.3.bias"},
		},
	}
)

// srcKey is the layout's block suffix for torchvision's suffix dst.
func (l swinLayout) srcKey(dst string) string {
	for _, k := range l.blockKeys {
		if k[1] == dst {
			return k[0]
		}
	}
	panic("convert: no block key for " + dst) // blockKeys is fixed above
}

// relIndexSuffix is the block's constant relative_position_index buffer,
// which flbq computes itself when a checkpoint leaves it out.
const relIndexSuffix = "attn.relative_position_index"

// transform rewrites a source tensor into flbq's layout.
type transform func(t *safetensors.Tensor) error

// mapping is one flbq tensor: its source key and how it is rewritten.
type mapping struct {
	src, dst string
	fn       transform
	anyDType bool // fn also applies to integer tensors
	optional bool // a constant buffer flbq can compute (fill)
	fill     func() *safetensors.Tensor
}

// swinArch is what the tensors say about the architecture.
type swinArch struct {
	embed, patchH, patchW int
	depths, heads         []int
	window                int
	mlpRatio              float64
	outNorms              bool
	fpnChannels           int
	numClasses            int // foreground classes (K)
	maskConvs             int // -1: no mask head
}

var stageBlockRe = regexp.MustCompile(`^(backbone\.(?:stages|layers))\.(\d+)\.blocks\.(\d+)\.`)

// inferSwin reads the architecture from the tensors' names and shapes.
func (l swinLayout) inferSwin(ts map[string]*safetensors.Tensor) (*swinArch, error) {
	need := func(name string, rank int) (*safetensors.Tensor, error) {
		return needTensor(ts, name, rank, fmt.Sprintf("a %s Swin Mask R-CNN", l.source))
	}
	a := &swinArch{maskConvs: -1}
	pe, err := need(l.patchEmbed+".weight", 4)
	if err != nil {
		return nil, err
	}
	if pe.Shape[1] != 3 {
		return nil, fmt.Errorf("key %q: shape %v: want 3 input channels", l.patchEmbed+".weight", pe.Shape)
	}
	a.embed, a.patchH, a.patchW = pe.Shape[0], pe.Shape[2], pe.Shape[3]
	// Blocks per stage: indices must run 0..n-1 without gaps.
	blocks := map[int]map[int]bool{}
	nStages := 0
	for name := range ts {
		m := stageBlockRe.FindStringSubmatch(name)
		if m == nil || m[1] != l.stages {
			continue
		}
		i, _ := strconv.Atoi(m[2])
		j, _ := strconv.Atoi(m[3])
		if i > 16 || j > 1024 {
			return nil, fmt.Errorf("key %q: stage or block index out of range", name)
		}
		if blocks[i] == nil {
			blocks[i] = map[int]bool{}
		}
		blocks[i][j] = true
		nStages = max(nStages, i+1)
	}
	if nStages == 0 {
		return nil, fmt.Errorf("no key starts with %q: not a Swin backbone in %s layout", l.stages+".", l.source)
	}
	for i := 0; i < nStages; i++ {
		d := len(blocks[i])
		for j := 0; j < d; j++ {
			if !blocks[i][j] {
				return nil, fmt.Errorf("missing keys %s.%d.blocks.%d.* (stage %d has blocks up to %d)", l.stages, i, j, i, d)
			}
		}
		if d == 0 {
			return nil, fmt.Errorf("missing keys %s.%d.blocks.0.*", l.stages, i)
		}
		a.depths = append(a.depths, d)
		blk := fmt.Sprintf("%s.%d.blocks.0.", l.stages, i)
		tabKey, fc1Key := blk+l.srcKey("attn.relative_position_bias_table"), blk+l.srcKey("mlp.0.weight")
		tab, err := need(tabKey, 2)
		if err != nil {
			return nil, err
		}
		a.heads = append(a.heads, tab.Shape[1])
		w := 1
		for (2*w-1)*(2*w-1) < tab.Shape[0] {
			w++
		}
		if (2*w-1)*(2*w-1) != tab.Shape[0] {
			return nil, fmt.Errorf("key %q: %d rows is not (2w-1)² for a square window", tabKey, tab.Shape[0])
		}
		if i == 0 {
			a.window = w
		} else if w != a.window {
			return nil, fmt.Errorf("key %q: window %d, stage 0 has %d", tabKey, w, a.window)
		}
		fc1, err := need(fc1Key, 2)
		if err != nil {
			return nil, err
		}
		dim := a.embed << i
		if fc1.Shape[1] != dim || fc1.Shape[0]%dim != 0 {
			return nil, fmt.Errorf("key %q: shape %v does not fit stage %d's width %d", fc1Key, fc1.Shape, i, dim)
		}
		r := float64(fc1.Shape[0]) / float64(dim)
		if i == 0 {
			a.mlpRatio = r
		} else if r != a.mlpRatio {
			return nil, fmt.Errorf("key %q: MLP ratio %v, stage 0 has %v", fc1Key, r, a.mlpRatio)
		}
	}
	_, a.outNorms = ts["backbone.norm0.weight"]
	lat, err := need("neck.lateral_convs.0.conv.weight", 4)
	if err != nil {
		return nil, err
	}
	a.fpnChannels = lat.Shape[0]
	cls, err := need("roi_head.bbox_head.fc_cls.weight", 2)
	if err != nil {
		return nil, err
	}
	a.numClasses = cls.Shape[0] - 1
	if a.numClasses < 1 {
		return nil, fmt.Errorf("key %q: shape %v: no foreground class", "roi_head.bbox_head.fc_cls.weight", cls.Shape)
	}
	if _, ok := ts["roi_head.mask_head.conv_logits.weight"]; ok {
		a.maskConvs = 0
		for {
			if _, ok := ts[fmt.Sprintf("roi_head.mask_head.convs.%d.conv.weight", a.maskConvs)]; !ok {
				break
			}
			a.maskConvs++
		}
	}
	return a, nil
}

// mappings lists every tensor of the architecture: source key → flbq name.
func (l swinLayout) mappings(a *swinArch) []mapping {
	var ms []mapping
	add := func(src, dst string, fn transform) { ms = append(ms, mapping{src: src, dst: dst, fn: fn}) }
	wb := func(src, dst string, fn transform) {
		add(src+".weight", dst+".weight", fn)
		add(src+".bias", dst+".bias", fn)
	}
	wb(l.patchEmbed, "backbone.body.0.0", nil)
	wb("backbone.patch_embed.norm", "backbone.body.0.2", nil)
	for i, d := range a.depths {
		for j := 0; j < d; j++ {
			src := fmt.Sprintf("%s.%d.blocks.%d.", l.stages, i, j)
			dst := fmt.Sprintf("backbone.body.%d.%d.", 2*i+1, j)
			for _, k := range l.blockKeys {
				m := mapping{src: src + k[0], dst: dst + k[1]}
				if k[1] == relIndexSuffix {
					// Both frameworks keep it T×T; torchvision flattens it.
					w := a.window
					m.fn, m.anyDType = flatten, true
					m.optional, m.fill = true, func() *safetensors.Tensor { return relativePositionIndex(w) }
				}
				ms = append(ms, m)
			}
		}
		if i < len(a.depths)-1 {
			src := fmt.Sprintf("%s.%d.downsample.", l.stages, i)
			dst := fmt.Sprintf("backbone.body.%d.", 2*i+2)
			var cols, vec transform
			if l.unfold {
				cols, vec = unfoldToConcat(1), unfoldToConcat(0)
			}
			add(src+"norm.weight", dst+"norm.weight", vec)
			add(src+"norm.bias", dst+"norm.bias", vec)
			add(src+"reduction.weight", dst+"reduction.weight", cols)
		}
		if a.outNorms {
			wb(fmt.Sprintf("backbone.norm%d", i), fmt.Sprintf("backbone.out_norms.%d", i), nil)
		}
		wb(fmt.Sprintf("neck.lateral_convs.%d.conv", i), fmt.Sprintf("backbone.fpn.inner_blocks.%d.0", i), nil)
		wb(fmt.Sprintf("neck.fpn_convs.%d.conv", i), fmt.Sprintf("backbone.fpn.layer_blocks.%d.0", i), nil)
	}
	wb("rpn_head.rpn_conv", "rpn.head.conv.0.0", nil)
	wb("rpn_head.rpn_cls", "rpn.head.cls_logits", nil)
	wb("rpn_head.rpn_reg", "rpn.head.bbox_pred", nil)
	wb("roi_head.bbox_head.shared_fcs.0", "roi_heads.box_head.fc6", nil)
	wb("roi_head.bbox_head.shared_fcs.1", "roi_heads.box_head.fc7", nil)
	k := a.numClasses
	wb("roi_head.bbox_head.fc_cls", "roi_heads.box_predictor.cls_score", backgroundFirst(k))
	wb("roi_head.bbox_head.fc_reg", "roi_heads.box_predictor.bbox_pred", withBackgroundRows(k, 4))
	for i := 0; i < a.maskConvs; i++ {
		wb(fmt.Sprintf("roi_head.mask_head.convs.%d.conv", i), fmt.Sprintf("roi_heads.mask_head.%d.0", i), nil)
	}
	if a.maskConvs >= 0 {
		wb("roi_head.mask_head.upsample", "roi_heads.mask_predictor.conv5_mask", nil)
		wb("roi_head.mask_head.conv_logits", "roi_heads.mask_predictor.mask_fcn_logits", withBackgroundRows(k, 1))
	}
	return ms
}

// unfoldToConcat reorders PatchMerging's 4C inputs (along dimension dim:
// 1 for the reduction weight's columns, 0 for the norm's vectors) from
// nn.Unfold's order, index c·4 + 2·i + j for channel c at offset (row i,
// column j), to torchvision's x0,x1,x2,x3 = (0,0),(1,0),(0,1),(1,1)
// blocks, index q·C + c — the inverse of mmdetection's
// tools/model_converters/swin2mmdet.py correct_unfold_reduction_order.
func unfoldToConcat(dim int) transform {
	return func(t *safetensors.Tensor) error {
		if len(t.Shape) != dim+1 || t.Shape[dim]%4 != 0 {
			return fmt.Errorf("shape %v: want %d dimensions and a multiple of 4 along dimension %d", t.Shape, dim+1, dim)
		}
		n4 := t.Shape[dim]
		c := n4 / 4
		rows := 1
		if dim == 1 {
			rows = t.Shape[0]
		}
		unfoldOffset := [4]int{0, 2, 1, 3} // q → 2i+j for (i,j) = (0,0),(1,0),(0,1),(1,1)
		out := make([]float32, len(t.F32))
		for r := 0; r < rows; r++ {
			src, dst := t.F32[r*n4:(r+1)*n4], out[r*n4:(r+1)*n4]
			for q := 0; q < 4; q++ {
				for ch := 0; ch < c; ch++ {
					dst[q*c+ch] = src[ch*4+unfoldOffset[q]]
				}
			}
		}
		t.F32 = out
		return nil
	}
}

// flatten makes a tensor one-dimensional.
func flatten(t *safetensors.Tensor) error {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	t.Shape = []int{n}
	return nil
}

// backgroundFirst moves mmdetection's background class (the last of K+1
// classifier rows) to torchvision's index 0.
func backgroundFirst(k int) transform {
	return func(t *safetensors.Tensor) error {
		if len(t.Shape) == 0 || t.Shape[0] != k+1 {
			return fmt.Errorf("shape %v: want %d rows (%d classes + background)", t.Shape, k+1, k)
		}
		row := len(t.F32) / (k + 1)
		out := make([]float32, 0, len(t.F32))
		out = append(out, t.F32[k*row:]...)
		t.F32 = append(out, t.F32[:k*row]...)
		return nil
	}
}

// withBackgroundRows gives class-specific predictions (per bytes rows per
// class: 4 box deltas, 1 mask) a zero background entry in front, as
// torchvision's predictors have; a class-agnostic predictor (per rows) is
// repeated for every class.
func withBackgroundRows(k, per int) transform {
	return func(t *safetensors.Tensor) error {
		if len(t.Shape) == 0 || (t.Shape[0] != k*per && t.Shape[0] != per) {
			return fmt.Errorf("shape %v: want %d rows (%d classes × %d) or %d (class-agnostic)", t.Shape, k*per, k, per, per)
		}
		row := len(t.F32) / t.Shape[0]
		out := make([]float32, per*row, (k+1)*per*row)
		if t.Shape[0] == per {
			for c := 0; c < k; c++ {
				out = append(out, t.F32...)
			}
		} else {
			out = append(out, t.F32...)
		}
		t.F32 = out
		t.Shape = append([]int{(k + 1) * per}, t.Shape[1:]...)
		return nil
	}
}

// relativePositionIndex is Swin's constant buffer for a w×w window
// (torchvision's and both mmdetection layouts' construction agree).
func relativePositionIndex(w int) *safetensors.Tensor {
	T := w * w
	idx := make([]int64, T*T)
	for a := 0; a < T; a++ {
		for b := 0; b < T; b++ {
			dy := a/w - b/w + w - 1
			dx := a%w - b%w + w - 1
			idx[a*T+b] = int64(dy*(2*w-1) + dx)
		}
	}
	raw := make([]byte, 8*len(idx))
	for i, v := range idx {
		for k := 0; k < 8; k++ {
			raw[8*i+k] = byte(uint64(v) >> (8 * k))
		}
	}
	return &safetensors.Tensor{Shape: []int{T * T}, DType: safetensors.I64, Raw: raw}
}

// mmdetSettings are the inference settings of mmdetection's Swin Mask
// R-CNN configs (configs/swin, configs/_base_/models/mask_rcnn_r50_fpn.py
// test_cfg, configs/_base_/datasets/coco_instance.py test pipeline), the
// same in the official Swin repository's configs; its mmdet 2.11 filters
// proposals by size only when min_bbox_size > 0 (rpn_head.py:221), where
// 2.25 drops empty ones (rpn_min_size_strict).
func mmdetSettings(src Source) map[string]any {
	return map[string]any{
		"min_size": 800, "max_size": 1333, "resize": "mmcv",
		// Normalize(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True) / 255.
		"image_mean": []float64{123.675 / 255, 116.28 / 255, 103.53 / 255},
		"image_std":  []float64{58.395 / 255, 57.12 / 255, 57.375 / 255},
		// AnchorGenerator(scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]).
		"anchor_sizes":   [][]float64{{32}, {64}, {128}, {256}, {512}},
		"aspect_ratios":  [][]float64{{0.5, 1, 2}, {0.5, 1, 2}, {0.5, 1, 2}, {0.5, 1, 2}, {0.5, 1, 2}},
		"anchor_round":   false,
		"anchor_strides": []int{4, 8, 16, 32, 64},
		// rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(iou_threshold=0.7), min_bbox_size=0).
		"rpn_pre_nms_top_n_test": 1000, "rpn_post_nms_top_n_test": 1000, "rpn_nms_thresh": 0.7,
		"rpn_score_thresh": 0.0, "rpn_min_size": 0.0, "rpn_min_size_strict": src == MMDet,
		// RoIAlign(output_size=7 / 14, sampling_ratio=0), aligned=True (mmcv's default).
		"roi_sampling_ratio": 0, "roi_aligned": true, "roi_strides": []int{4, 8, 16, 32},
		// rcnn=dict(score_thr=0.05, nms=dict(iou_threshold=0.5), max_per_img=100, mask_thr_binary=0.5).
		"box_score_thresh": 0.05, "box_nms_thresh": 0.5, "box_detections_per_img": 100, "box_min_size": 0.0,
		"box_delta_clamp": "symmetric", "mask_thresh": 0.5, "mask_paste": "grid_sample",
	}
}

// convertSwin maps an mmdetection-layout checkpoint to flbq's tensors and
// configuration. overrides (JSON object, may be nil) replaces config keys.
func convertSwin(l swinLayout, ck *torchckpt.Checkpoint, overrides []byte, warn func(string)) ([]safetensors.Tensor, map[string]any, map[string]string, error) {
	byName, err := checkpointTensors(ck)
	if err != nil {
		return nil, nil, nil, err
	}
	a, err := l.inferSwin(byName)
	if err != nil {
		return nil, nil, nil, err
	}
	ms := l.mappings(a)
	known := map[string]bool{}
	srcOf := map[string]string{}
	var out []safetensors.Tensor
	for _, m := range ms {
		known[m.src] = true
		srcOf[m.dst] = m.src
		t, ok := byName[m.src]
		if !ok {
			if m.optional {
				f := m.fill()
				f.Name = m.dst
				out = append(out, *f)
				continue
			}
			return nil, nil, nil, fmt.Errorf("missing key %q (flbq %q)", m.src, m.dst)
		}
		c := *t
		c.Name = m.dst
		if m.fn != nil {
			if c.F32 == nil && !m.anyDType {
				return nil, nil, nil, fmt.Errorf("key %q: dtype %s, want a floating-point tensor", m.src, t.DType)
			}
			if err := m.fn(&c); err != nil {
				return nil, nil, nil, fmt.Errorf("key %q: %w", m.src, err)
			}
		}
		out = append(out, c)
	}
	var extra []string
	for _, t := range ck.Tensors {
		if !known[t.Name] {
			extra = append(extra, t.Name)
		}
	}
	if len(extra) > 0 {
		return nil, nil, nil, fmt.Errorf("unexpected key %q (%d keys in all are not part of a Swin Mask R-CNN in %s layout; first ones: %s)",
			extra[0], len(extra), l.source, strings.Join(extra[:min(len(extra), 4)], ", "))
	}
	cfg := mmdetSettings(l.source)
	for k, v := range map[string]any{
		"family": "swin", "task": "detection", "patch_size": []int{a.patchH, a.patchW}, "embed_dim": a.embed,
		"depths": a.depths, "num_heads": a.heads, "window_size": []int{a.window, a.window}, "mlp_ratio": a.mlpRatio,
		"out_norms": a.outNorms, "shift_single_window": true, "out_channels": a.fpnChannels, "num_classes": a.numClasses + 1,
	} {
		cfg[k] = v
	}
	names, ids := classNames(ck.Classes, a.numClasses, warn)
	cfg["categories"] = names
	cfg["category_ids"] = ids
	if err := mergeOverrides(cfg, overrides); err != nil {
		return nil, nil, nil, err
	}
	return out, cfg, srcOf, nil
}

// classNames returns flbq's categories (background first) and COCO
// category ids: COCO's when the checkpoint's classes are COCO's 80 (or it
// names none and has 80), else the label itself, with a warning.
func classNames(classes []string, k int, warn func(string)) ([]string, []int64) {
	names := []string{"__background__"}
	ids := []int64{0}
	coco := (classes == nil && k == len(cocoClasses)) || slices.Equal(classes, cocoClasses)
	switch {
	case coco:
		names = append(names, cocoClasses...)
		return names, append(ids, cocoIDs...)
	case len(classes) == k:
		names = append(names, classes...)
	default:
		if classes != nil {
			warn(fmt.Sprintf("meta.CLASSES names %d classes, the classifier has %d: class names left out", len(classes), k))
		}
		for i := 1; i <= k; i++ {
			names = append(names, "class"+strconv.Itoa(i))
		}
	}
	warn(fmt.Sprintf("the %d classes are not COCO's 80: category_ids are the labels 1..%d (give category_ids with --config)", k, k))
	for i := 1; i <= k; i++ {
		ids = append(ids, int64(i))
	}
	return names, ids
}

// needTensor returns ts[name], which a model of kind what must have with
// rank dimensions.
func needTensor(ts map[string]*safetensors.Tensor, name string, rank int, what string) (*safetensors.Tensor, error) {
	t, ok := ts[name]
	if !ok {
		return nil, fmt.Errorf("missing key %q (%s has it)", name, what)
	}
	if len(t.Shape) != rank {
		return nil, fmt.Errorf("key %q: shape %v, want %d dimensions", name, t.Shape, rank)
	}
	return t, nil
}

// checkpointTensors copies every tensor of ck, by name.
func checkpointTensors(ck *torchckpt.Checkpoint) (map[string]*safetensors.Tensor, error) {
	byName := map[string]*safetensors.Tensor{}
	for _, t := range ck.Tensors {
		st, err := fromCheckpoint(t)
		if err != nil {
			return nil, err
		}
		byName[t.Name] = st
	}
	return byName, nil
}

// mergeOverrides replaces cfg's keys by those of the --config JSON object.
func mergeOverrides(cfg map[string]any, overrides []byte) error {
	if len(overrides) == 0 {
		return nil
	}
	var ov map[string]any
	if err := json.Unmarshal(overrides, &ov); err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	for k, v := range ov {
		cfg[k] = v
	}
	return nil
}

// fromCheckpoint copies a checkpoint tensor as a model-file tensor.
func fromCheckpoint(t *torchckpt.Tensor) (*safetensors.Tensor, error) {
	out := &safetensors.Tensor{Name: t.Name, Shape: t.Shape}
	if n := t.Elems(); n < 0 || int64(len(t.Raw)) != int64(n)*t.DType.Size() {
		return nil, fmt.Errorf("key %q: %d bytes for shape %v of %s", t.Name, len(t.Raw), t.Shape, t.DType)
	}
	switch {
	case t.DType.IsFloat():
		out.F32 = t.Float32() // F32: exact for every source dtype but F64
	case t.DType == safetensors.I64:
		out.DType, out.Raw = safetensors.I64, t.Raw
	default:
		return nil, fmt.Errorf("key %q: dtype %s has no place in a model file", t.Name, t.DType)
	}
	return out, nil
}
