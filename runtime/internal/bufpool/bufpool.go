// Package bufpool keeps reusable buffers by power-of-two size class for
// the runtime's per-call scratch (im2col blocks, channels-last copies,
// quantized activations).
//
// Unlike sync.Pool it survives garbage collections: an inference
// runtime's working set is the same from call to call, and a freshly
// allocated large buffer costs its page faults again on every call
// (measured: the quantized Swin-T detector spent a third of its time
// faulting in buffers that sync.Pool had dropped). Each class keeps at
// most Keep free buffers, so the memory held is bounded by the peak
// concurrent use.
package bufpool

import (
	"math/bits"
	"sync"
)

// Keep is the most free buffers held per size class.
const Keep = 8

// Class is the size class of n elements: buffers of class c hold 1<<c.
func Class(n int) int { return bits.Len(uint(max(n, 1) - 1)) }

// Pool holds free values of type T by size class.
type Pool[T any] struct {
	mu   sync.Mutex
	free [64][]T
}

// Get returns a free value of class c, if any.
func (p *Pool[T]) Get(c int) (v T, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.free[c]
	if len(l) == 0 {
		return v, false
	}
	v = l[len(l)-1]
	var zero T
	l[len(l)-1] = zero
	p.free[c] = l[:len(l)-1]
	return v, true
}

// Put returns a value of class c; beyond Keep free values it is dropped.
func (p *Pool[T]) Put(c int, v T) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free[c]) < Keep {
		p.free[c] = append(p.free[c], v)
	}
}

// Slices is a Pool of slices: Get returns a slice of length n whose
// capacity is its class's, contents undefined.
type Slices[T any] struct{ p Pool[*[]T] }

// Get returns a slice of length n.
func (s *Slices[T]) Get(n int) *[]T {
	c := Class(n)
	if b, ok := s.p.Get(c); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]T, n, 1<<c)
	return &b
}

// Put returns a slice obtained from Get.
func (s *Slices[T]) Put(b *[]T) {
	c := Class(cap(*b))
	if cap(*b) == 1<<c {
		s.p.Put(c, b)
	}
}
