package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/flbq/flbq/runtime/model"
)

func init() {
	register(&cli.Command{
		Name:      "inspect",
		Usage:     "describe a model file: family, config, parameters, quantizable linear layers",
		ArgsUsage: " ",
		Description: `Loads a flbq safetensors model (torchvision state_dict names, "flbq.config"
   metadata; see tools/refgen/export_torchvision.py), validates every tensor,
   and prints the family, task, configuration, parameter count and the list
   of linear layers F-LBQ quantizes, with their shapes (out × in).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "model `FILE` (.safetensors)", Required: true},
			&cli.BoolFlag{Name: "json", Usage: "print the description as JSON"},
		},
		Action: runInspect,
	})
}

type inspectLayer struct {
	Name string `json:"name"`
	In   int    `json:"in"`
	Out  int    `json:"out"`
}

func runInspect(c *cli.Context) error {
	m, err := model.Load(c.String("model"))
	if err != nil {
		return err
	}
	var layers []inspectLayer
	var qw int64
	for _, l := range m.QuantLayers() {
		layers = append(layers, inspectLayer{l.Name, l.In, l.Out})
		qw += int64(l.In) * int64(l.Out)
	}
	w := c.App.Writer
	if c.Bool("json") {
		b, _ := json.MarshalIndent(map[string]any{
			"family": m.Config.Family, "task": m.Config.Task, "config": json.RawMessage(m.Config.JSON()),
			"parameters": m.NumParams(), "quantizable_weights": qw, "quantizable_layers": layers,
		}, "", "  ")
		fmt.Fprintln(w, string(b))
		return nil
	}
	fmt.Fprintf(w, "family: %s\ntask:   %s\nparameters: %d\nconfig: %s\n", m.Config.Family, m.Config.Task, m.NumParams(), m.Config.JSON())
	if m.Backbone != nil {
		fmt.Fprintf(w, "backbone outputs: %d, blocks: %d\n", m.Backbone.NumOutputs(), len(m.Backbone.Blocks()))
		if u := m.Weights.Unused(""); len(u) > 0 {
			fmt.Fprintf(w, "head tensors (not used by the backbone): %d\n", len(u))
		}
	}
	fmt.Fprintf(w, "quantizable linear layers: %d (%d weights)\n", len(layers), qw)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  name\tout×in")
	for _, l := range layers {
		fmt.Fprintf(tw, "  %s\t%d×%d\n", l.Name, l.Out, l.In)
	}
	return tw.Flush()
}
