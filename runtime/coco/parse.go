package coco

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// A small strict JSON reader for the large COCO files. encoding/json
// works through reflection and re-scans nested values; instances and
// results files of a few hundred MB read several times faster this way,
// and top-level lists are split so that their elements decode in
// parallel.

type parser struct {
	b []byte
	i int
}

type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string { return fmt.Sprintf("invalid JSON at byte %d: %s", e.off, e.msg) }

func (p *parser) fail(msg string) error { return &syntaxError{p.i, msg} }

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, or 0 at the end.
func (p *parser) peek() byte {
	p.ws()
	if p.i >= len(p.b) {
		return 0
	}
	return p.b[p.i]
}

func (p *parser) eat(c byte) error {
	if p.peek() != c {
		if p.i >= len(p.b) {
			return p.fail("unexpected end of input")
		}
		return p.fail(fmt.Sprintf("want %q, got %q", c, p.b[p.i]))
	}
	p.i++
	return nil
}

func (p *parser) literal(s string) error {
	if !bytes.HasPrefix(p.b[p.i:], []byte(s)) {
		return p.fail("invalid literal")
	}
	p.i += len(s)
	return nil
}

// null consumes a null if there is one.
func (p *parser) null() bool {
	if p.peek() == 'n' && bytes.HasPrefix(p.b[p.i:], []byte("null")) {
		p.i += 4
		return true
	}
	return false
}

// kind names the JSON type of the next value, for error messages.
func (p *parser) kind() string {
	switch c := p.peek(); {
	case c == '"':
		return "string"
	case c == '{':
		return "object"
	case c == '[':
		return "array"
	case c == 't' || c == 'f':
		return "bool"
	case c == 'n':
		return "null"
	case c == '-' || c >= '0' && c <= '9':
		return "number"
	case c == 0:
		return "end of input"
	}
	return "invalid value"
}

// str parses a string. Without escapes the result aliases p.b.
func (p *parser) str() ([]byte, error) {
	if err := p.eat('"'); err != nil {
		return nil, err
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, nil
		case c == '\\':
			return p.strSlow(start)
		case c < 0x20:
			return nil, p.fail("control character in string")
		}
		p.i++
	}
	return nil, p.fail("unexpected end of input in string")
}

func (p *parser) strSlow(start int) ([]byte, error) {
	out := append([]byte(nil), p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return out, nil
		case c < 0x20:
			return nil, p.fail("control character in string")
		case c != '\\':
			out = append(out, c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.b) {
			break
		}
		e := p.b[p.i+1]
		p.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return nil, p.fail("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if p.i+1 < len(p.b) && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
					p.i += 2
					if r2, ok = p.hex4(); !ok {
						return nil, p.fail("bad \\u escape")
					}
				}
				r = utf16.DecodeRune(r, r2)
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, p.fail("bad escape")
		}
	}
	return nil, p.fail("unexpected end of input in string")
}

func (p *parser) hex4() (rune, bool) {
	if p.i+4 > len(p.b) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(p.b[p.i:p.i+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	p.i += 4
	return rune(v), true
}

// numText returns the bytes of a JSON number (grammar checked) and
// whether it is a plain integer.
func (p *parser) numText() ([]byte, bool, error) {
	p.ws()
	start := p.i
	b := p.b
	i := p.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return nil, false, &typeErr{p.kind(), ""}
	}
	isInt := true
	if i < len(b) && b[i] == '.' {
		isInt = false
		i++
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			p.i = i
			return nil, false, p.fail("bad number")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		isInt = false
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			p.i = i
			return nil, false, p.fail("bad number")
		}
	}
	p.i = i
	return b[start:i], isInt, nil
}

// typeErr is a value of the wrong JSON type (or range).
type typeErr struct{ got, want string }

func (e *typeErr) Error() string { return fmt.Sprintf("cannot use JSON %s as %s", e.got, e.want) }

func withWant(err error, want string) error {
	if te, ok := err.(*typeErr); ok && te.want == "" {
		return &typeErr{te.got, want}
	}
	return err
}

func (p *parser) float() (float64, error) {
	t, isInt, err := p.numText()
	if err != nil {
		return 0, withWant(err, "float64")
	}
	if isInt && len(t) < 16 {
		// fast path, exact for |v| < 2^53
		v := int64(0)
		neg := t[0] == '-'
		for _, c := range t {
			if c != '-' {
				v = v*10 + int64(c-'0')
			}
		}
		if neg {
			v = -v
		}
		return float64(v), nil
	}
	v, err := strconv.ParseFloat(string(t), 64)
	if err != nil {
		return 0, &typeErr{"number " + string(t), "float64"}
	}
	return v, nil
}

// int parses an integer; integral numbers written with a fraction or
// exponent (1.0, 1e3) are accepted as Python's COCO tools accept them.
func (p *parser) int() (int64, error) {
	t, isInt, err := p.numText()
	if err != nil {
		return 0, withWant(err, "int64")
	}
	if isInt {
		v, err := strconv.ParseInt(string(t), 10, 64)
		if err != nil {
			return 0, &typeErr{"number " + string(t), "int64"}
		}
		return v, nil
	}
	f, err := strconv.ParseFloat(string(t), 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, &typeErr{"number " + string(t), "int64"}
	}
	return int64(f), nil
}

// skip consumes any value.
func (p *parser) skip() error {
	switch c := p.peek(); c {
	case '"':
		_, err := p.str()
		return err
	case '{':
		return p.object(func([]byte) error { return p.skip() })
	case '[':
		return p.array(func(int) error { return p.skip() })
	case 't':
		return p.literal("true")
	case 'f':
		return p.literal("false")
	case 'n':
		return p.literal("null")
	case 0:
		return p.fail("unexpected end of input")
	default:
		if c == '-' || c >= '0' && c <= '9' {
			_, _, err := p.numText()
			return err
		}
		return p.fail(fmt.Sprintf("invalid character %q", c))
	}
}

// object calls fn with each key, positioned at its value.
func (p *parser) object(fn func(key []byte) error) error {
	if p.peek() != '{' {
		return &typeErr{p.kind(), "object"}
	}
	p.i++
	if p.peek() == '}' {
		p.i++
		return nil
	}
	for {
		if p.peek() != '"' {
			return p.fail("want an object key")
		}
		k, err := p.str()
		if err != nil {
			return err
		}
		if err := p.eat(':'); err != nil {
			return err
		}
		if err := fn(k); err != nil {
			return err
		}
		switch p.peek() {
		case ',':
			p.i++
		case '}':
			p.i++
			return nil
		case 0:
			return p.fail("unexpected end of input")
		default:
			return p.fail("want ',' or '}'")
		}
	}
}

// array calls fn for each element, positioned at it.
func (p *parser) array(fn func(i int) error) error {
	if p.peek() != '[' {
		return &typeErr{p.kind(), "array"}
	}
	p.i++
	if p.peek() == ']' {
		p.i++
		return nil
	}
	for n := 0; ; n++ {
		if err := fn(n); err != nil {
			return err
		}
		switch p.peek() {
		case ',':
			p.i++
		case ']':
			p.i++
			return nil
		case 0:
			return p.fail("unexpected end of input")
		default:
			return p.fail("want ',' or ']'")
		}
	}
}

// field wraps an error of a named field.
func field(name string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*syntaxError); ok {
		return err
	}
	return fmt.Errorf("%s: %w", name, err)
}

// elements splits the JSON list at p into the byte ranges of its
// elements (a fast scan that only tracks strings and nesting; the
// elements are validated when parsed). p ends after the list.
func (p *parser) elements() ([][2]int, error) {
	if p.peek() != '[' {
		return nil, &typeErr{p.kind(), "array"}
	}
	p.i++
	open := p.i
	var out [][2]int
	b := p.b
	i := p.i
	depth := 0
	start := -1
	for ; i < len(b); i++ {
		c := b[i]
		switch c {
		case '"':
			i++
			for i < len(b) && b[i] != '"' {
				if b[i] == '\\' {
					i++
				}
				i++
			}
			if start < 0 {
				start = i // the element is non-empty; fixStarts finds its start
			}
			continue
		case '{', '[':
			if depth == 0 && start < 0 {
				start = i
			}
			depth++
			continue
		case '}', ']':
			if depth == 0 {
				if c == ']' {
					if start >= 0 {
						out = append(out, [2]int{start, i})
					} else if len(out) > 0 {
						p.i = i
						return nil, p.fail("trailing comma in list")
					}
					p.i = i + 1
					return fixStarts(b, open, out), nil
				}
				p.i = i
				return nil, p.fail("unbalanced '}'")
			}
			depth--
			continue
		case ',':
			if depth == 0 {
				if start < 0 {
					p.i = i
					return nil, p.fail("empty list element")
				}
				out = append(out, [2]int{start, i})
				start = -1
			}
			continue
		case ' ', '\t', '\n', '\r':
			continue
		}
		if depth == 0 && start < 0 {
			start = i
		}
	}
	p.i = len(b)
	return nil, p.fail("unexpected end of input in list")
}

// fixStarts moves each range start to its first non-space byte.
func fixStarts(b []byte, open int, r [][2]int) [][2]int {
	for k := range r {
		lo := open
		if k > 0 {
			lo = r[k-1][1] + 1
		}
		for lo < r[k][1] && (b[lo] == ' ' || b[lo] == '\t' || b[lo] == '\n' || b[lo] == '\r') {
			lo++
		}
		r[k][0] = lo
	}
	return r
}

var errEmpty = errors.New("empty input")
