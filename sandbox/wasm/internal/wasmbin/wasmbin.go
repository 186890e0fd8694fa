// Package wasmbin reads and rewrites the few parts of a WebAssembly binary
// that kindling needs. For snapshots, it exports every mutable global so
// its value can be captured and restored, and turns active data segments
// into passive ones so instantiation does not write them over a restored
// memory image (the snapshotting code applies them itself, once, before
// initialization). For deadlines, it adds an interrupt flag that every
// loop checks (WithInterrupt).
//
// It understands the module structure (sections, globals, exports, data
// segments, memory limits) and the encoding of instructions, and copies
// everything else byte for byte.
package wasmbin

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Section IDs (WebAssembly core spec, 5.5).
const (
	secCustom   = 0
	secImport   = 2
	secGlobal   = 6
	secExport   = 7
	secStart    = 8
	secData     = 11
	secDataCnt  = 12
	exportFunc  = 0x00
	exportGlob  = 0x03
	importGlob  = 0x03
	importMem   = 0x02
	importTable = 0x01
	importFunc  = 0x00
)

// ErrUnsupported marks a module this package cannot rewrite safely; the
// caller falls back to running it without a snapshot.
var ErrUnsupported = errors.New("module not supported for snapshots")

// Global is a mutable global defined by the module.
type Global struct {
	Index  uint32 // in the global index space (after imported globals)
	Type   byte   // 0x7F i32, 0x7E i64, 0x7D f32, 0x7C f64
	Export string // the name Instrument exported it under
}

type section struct {
	id   byte
	body []byte
}

// Module is a parsed binary.
type Module struct {
	sections []section
	// Globals lists the defined mutable globals.
	Globals []Global
	// HasStart is true when the module has a start function.
	HasStart bool
	// ImportsMutableGlobal is true when a mutable global is imported.
	ImportsMutableGlobal bool
	// Exports lists the names of exported functions.
	Exports map[string]bool
	// Data lists the data segments.
	Data            []Segment
	importedGlobals uint32
	definedGlobals  uint32
	// hasMemory is true when the module imports or defines a memory.
	hasMemory bool
}

// Segment is a data segment.
type Segment struct {
	Active bool
	// Offset is where an active segment is written in memory 0; valid only
	// when ConstOffset is true (an i32.const offset).
	Offset      uint32
	ConstOffset bool
	Bytes       []byte
}

// ExportPrefix prefixes the names under which globals are exported.
const ExportPrefix = "kindling:global:"

// Parse splits bin into sections and reads what the rewrites need.
func Parse(bin []byte) (*Module, error) {
	if len(bin) < 8 || !bytes.Equal(bin[:4], []byte("\x00asm")) || binary.LittleEndian.Uint32(bin[4:8]) != 1 {
		return nil, fmt.Errorf("not a WebAssembly 1.0 binary")
	}
	m := &Module{Exports: map[string]bool{}}
	r := &reader{b: bin, off: 8}
	for r.off < len(bin) {
		id := r.byte()
		size := r.u32()
		body := r.bytes(int(size))
		if r.err != nil {
			return nil, fmt.Errorf("section %d: %w", id, r.err)
		}
		m.sections = append(m.sections, section{id: id, body: body})
	}
	for _, s := range m.sections {
		var err error
		switch s.id {
		case secImport:
			err = m.readImports(s.body)
		case secGlobal:
			err = m.readGlobals(s.body)
		case secStart:
			m.HasStart = true
		case secExport:
			err = m.readExports(s.body)
		case secData:
			m.Data, err = readData(s.body)
		case secMemory:
			m.hasMemory = len(s.body) > 0 && s.body[0] != 0
		}
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Module) readImports(b []byte) error {
	r := &reader{b: b}
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		r.name()
		r.name()
		switch kind := r.byte(); kind {
		case importFunc:
			r.u32()
		case importTable:
			r.byte()
			r.limits()
		case importMem:
			r.limits()
			m.hasMemory = true
		case importGlob:
			r.byte()
			if r.byte() == 1 {
				m.ImportsMutableGlobal = true
			}
			m.importedGlobals++
		default:
			return fmt.Errorf("import %d: kind %#x: %w", i, kind, ErrUnsupported)
		}
	}
	return r.err
}

func (m *Module) readGlobals(b []byte) error {
	r := &reader{b: b}
	n := r.u32()
	m.definedGlobals = n
	for i := uint32(0); i < n && r.err == nil; i++ {
		typ := r.byte()
		mut := r.byte()
		if err := r.constExpr(); err != nil {
			return fmt.Errorf("global %d: %w", i, err)
		}
		if mut != 1 {
			continue
		}
		switch typ {
		case 0x7F, 0x7E, 0x7D, 0x7C:
		default:
			return fmt.Errorf("mutable global %d of type %#x: %w", i, typ, ErrUnsupported)
		}
		idx := m.importedGlobals + i
		m.Globals = append(m.Globals, Global{Index: idx, Type: typ, Export: fmt.Sprintf("%s%d", ExportPrefix, idx)})
	}
	return r.err
}

// ForSnapshot returns the module with every mutable global exported under
// Global.Export and no data segments: instances of it start from a memory
// image that already holds them (the snapshotting code writes the active
// segments itself before initialization) and have their globals set
// through the exports. Dropping the segments, rather than making them
// passive, spares every instance the per-segment bookkeeping (Go modules
// carry tens of thousands of segments). A module whose code uses
// memory.init or data.drop fails validation without them; ForSnapshotPassive
// is the fallback that keeps them, passive.
func (m *Module) ForSnapshot() ([]byte, error) { return m.forSnapshot(false) }

// ForSnapshotPassive is ForSnapshot keeping the data segments, passive.
func (m *Module) ForSnapshotPassive() ([]byte, error) { return m.forSnapshot(true) }

func (m *Module) forSnapshot(keepPassive bool) ([]byte, error) {
	switch {
	case m.ImportsMutableGlobal:
		return nil, fmt.Errorf("imports a mutable global: %w", ErrUnsupported)
	case m.HasStart:
		return nil, fmt.Errorf("has a start function: %w", ErrUnsupported)
	}
	for i, d := range m.Data {
		if d.Active && !d.ConstOffset {
			return nil, fmt.Errorf("data segment %d has a computed offset: %w", i, ErrUnsupported)
		}
	}
	return m.encode(func(s section) (section, error) {
		switch s.id {
		case secExport:
			return m.withGlobalExports(s)
		case secData:
			if keepPassive {
				return passiveData(s)
			}
			return section{id: secData, body: []byte{0}}, nil
		case secDataCnt:
			if keepPassive {
				return s, nil
			}
			return section{id: secDataCnt, body: []byte{0}}, nil
		}
		return s, nil
	}, true)
}

func (m *Module) readExports(b []byte) error {
	r := &reader{b: b}
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		name := r.bytes(int(r.u32()))
		kind := r.byte()
		r.u32()
		if kind == exportFunc {
			m.Exports[string(name)] = true
		}
	}
	return r.err
}

func readData(b []byte) ([]Segment, error) {
	r := &reader{b: b}
	n := r.u32()
	var segs []Segment
	for i := uint32(0); i < n && r.err == nil; i++ {
		var seg Segment
		switch flag := r.u32(); flag {
		case 0, 2:
			if flag == 2 {
				if mem := r.u32(); mem != 0 {
					return nil, fmt.Errorf("data segment %d for memory %d: %w", i, mem, ErrUnsupported)
				}
			}
			seg.Active = true
			start := r.off
			if err := r.constExpr(); err != nil {
				return nil, fmt.Errorf("data segment %d: %w", i, err)
			}
			expr := r.b[start:r.off]
			if len(expr) >= 2 && expr[0] == 0x41 {
				er := &reader{b: expr[1:]}
				seg.Offset = uint32(er.leb(32, true))
				seg.ConstOffset = er.err == nil && er.off == len(expr)-2
			}
		case 1:
		default:
			return nil, fmt.Errorf("data segment %d: flag %d: %w", i, flag, ErrUnsupported)
		}
		seg.Bytes = r.bytes(int(r.u32()))
		segs = append(segs, seg)
	}
	return segs, r.err
}

// encode rebuilds the binary; addExports adds an export section when the
// module had none.
func (m *Module) encode(f func(section) (section, error), addExports bool) ([]byte, error) {
	var out bytes.Buffer
	out.WriteString("\x00asm\x01\x00\x00\x00")
	hadExports := false
	for _, s := range m.sections {
		if s.id == secExport {
			hadExports = true
		}
		if addExports && !hadExports && s.id != secCustom && order(s.id) > order(secExport) {
			// Insert an export section in its place.
			es, err := m.withGlobalExports(section{id: secExport, body: []byte{0}})
			if err != nil {
				return nil, err
			}
			writeSection(&out, es)
			hadExports = true
		}
		ns, err := f(s)
		if err != nil {
			return nil, err
		}
		writeSection(&out, ns)
	}
	if addExports && !hadExports {
		es, err := m.withGlobalExports(section{id: secExport, body: []byte{0}})
		if err != nil {
			return nil, err
		}
		writeSection(&out, es)
	}
	return out.Bytes(), nil
}

// order is a section's position in the binary (datacount sits before code).
func order(id byte) int {
	if id == secDataCnt {
		return 9
	}
	if id >= 10 {
		return int(id) + 1
	}
	return int(id)
}

func writeSection(out *bytes.Buffer, s section) {
	out.WriteByte(s.id)
	out.Write(uleb(uint64(len(s.body))))
	out.Write(s.body)
}

func (m *Module) withGlobalExports(s section) (section, error) {
	r := &reader{b: s.body}
	n := r.u32()
	if r.err != nil {
		return s, fmt.Errorf("export section: %w", r.err)
	}
	var b bytes.Buffer
	b.Write(uleb(uint64(n) + uint64(len(m.Globals))))
	b.Write(s.body[r.off:])
	for _, g := range m.Globals {
		b.Write(uleb(uint64(len(g.Export))))
		b.WriteString(g.Export)
		b.WriteByte(exportGlob)
		b.Write(uleb(uint64(g.Index)))
	}
	return section{id: secExport, body: b.Bytes()}, nil
}

func passiveData(s section) (section, error) {
	r := &reader{b: s.body}
	n := r.u32()
	var b bytes.Buffer
	b.Write(uleb(uint64(n)))
	for i := uint32(0); i < n; i++ {
		switch flag := r.u32(); flag {
		case 0: // active, memory 0
			if err := r.constExpr(); err != nil {
				return s, fmt.Errorf("data segment %d: %w", i, err)
			}
		case 1: // passive already
		case 2: // active, explicit memory
			r.u32()
			if err := r.constExpr(); err != nil {
				return s, fmt.Errorf("data segment %d: %w", i, err)
			}
		default:
			return s, fmt.Errorf("data segment %d: flag %d: %w", i, flag, ErrUnsupported)
		}
		size := r.u32()
		data := r.bytes(int(size))
		if r.err != nil {
			return s, fmt.Errorf("data segment %d: %w", i, r.err)
		}
		b.WriteByte(1)
		b.Write(uleb(uint64(size)))
		b.Write(data)
	}
	return section{id: secData, body: b.Bytes()}, nil
}

func uleb(v uint64) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			c |= 0x80
		}
		b = append(b, c)
		if v == 0 {
			return b
		}
	}
}

// sleb32 encodes v as a signed LEB128 (an i32.const immediate).
func sleb32(v int32) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// reader decodes the binary format; the first error sticks.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.fail("unexpected end at offset %d", r.off)
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || r.off+n > len(r.b) {
		r.fail("length %d runs past the end at offset %d", n, r.off)
		return nil
	}
	b := r.b[r.off : r.off+n]
	r.off += n
	return b
}

func (r *reader) leb(maxBits int, signed bool) uint64 {
	var v uint64
	var shift int
	for {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		v |= uint64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if signed && shift < 64 && c&0x40 != 0 {
				v |= ^uint64(0) << shift
			}
			return v
		}
		if shift >= maxBits+7 {
			r.fail("LEB128 too long at offset %d", r.off)
			return 0
		}
	}
}

func (r *reader) u32() uint32 { return uint32(r.leb(32, false)) }

func (r *reader) name() { r.bytes(int(r.u32())) }

func (r *reader) limits() {
	flag := r.byte()
	r.u32()
	if flag&1 == 1 {
		r.u32()
	}
}

// constExpr skips a constant expression up to and including its end.
func (r *reader) constExpr() error {
	for r.err == nil {
		switch op := r.byte(); op {
		case 0x0B: // end
			return nil
		case 0x41: // i32.const
			r.leb(32, true)
		case 0x42: // i64.const
			r.leb(64, true)
		case 0x43: // f32.const
			r.bytes(4)
		case 0x44: // f64.const
			r.bytes(8)
		case 0x23: // global.get
			r.u32()
		case 0xD0: // ref.null
			r.byte()
		case 0xD2: // ref.func
			r.u32()
		case 0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E: // extended const arithmetic
		default:
			return fmt.Errorf("constant expression opcode %#x: %w", op, ErrUnsupported)
		}
	}
	return r.err
}
