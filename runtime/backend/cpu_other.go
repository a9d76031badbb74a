//go:build !amd64 || purego

package backend

// Only the pure-Go tier is compiled for other architectures and the purego
// build tag.
func compiled(t Tier) bool { return t == PureGo }

func cpuHas(fs []string) bool { return len(fs) == 0 }
