package wasmbin

import (
	"bytes"
	"fmt"
)

// InterruptExport names the global that WithInterrupt adds and exports: a
// mutable i32, zero at instantiation. Set to anything else, it makes the
// instance trap (unreachable) at its next yield (see WithInterrupt), which
// is how the host stops a guest that runs past its deadline.
const InterruptExport = "kindling:interrupt"

// YieldEvery is how many loop iterations an instrumented guest runs
// between two yields to the host.
const YieldEvery = 1 << 14

// Section and opcode numbers the instrumentation needs.
const (
	secMemory = 5
	secCode   = 10

	opUnreachable = 0x00
	opLoop        = 0x03
	opIf          = 0x04
	opEnd         = 0x0B
	opDrop        = 0x1A
	opGlobalGet   = 0x23
	opGlobalSet   = 0x24
	opMemoryGrow  = 0x40
	opI32Const    = 0x41
	opI32Eqz      = 0x45
	opI32Sub      = 0x6B
	blockEmpty    = 0x40
)

// WithInterrupt returns the module with a countdown at the head of every
// loop. Every unbounded execution in WebAssembly goes round a loop
// (recursion ends in a stack overflow), so counting loop iterations bounds
// the time between two visits to the slow path, taken once every
// YieldEvery iterations:
//
//	global.get $count; i32.eqz
//	if
//	  i32.const YieldEvery; global.set $count
//	  i32.const 0; memory.grow; drop        ;; the yield
//	  global.get $interrupt; if; unreachable; end
//	end
//	global.get $count; i32.const 1; i32.sub; global.set $count
//
// The yield matters as much as the flag. Compiled guest code holds its
// goroutine's P and cannot be preempted, so a guest that never left it
// would stall every stop-the-world phase of the Go garbage collector —
// and with it the goroutine that was to raise the flag. memory.grow by
// zero pages is an instruction wazero always implements by a call into
// Go, where the scheduler can stop the goroutine; the fast path is a
// load, a store and a branch, where wazero's own context checking leaves
// the compiled code for Go at every iteration. The module must have a
// memory for that instruction. Custom sections holding DWARF are dropped:
// they address the code by offsets the insertion changes.
//
// The decoder knows the instructions of WebAssembly 2.0 plus threads; a
// body with anything else (exception handling, tail calls, typed function
// references, GC) fails with ErrUnsupported rather than being guessed at.
func (m *Module) WithInterrupt() ([]byte, error) {
	if m.Exports[InterruptExport] {
		return nil, fmt.Errorf("already exports %q: %w", InterruptExport, ErrUnsupported)
	}
	if !m.hasMemory {
		return nil, fmt.Errorf("has no memory to yield with: %w", ErrUnsupported)
	}
	flag := uleb(uint64(m.importedGlobals + m.definedGlobals))
	count := uleb(uint64(m.importedGlobals + m.definedGlobals + 1))
	every := append([]byte{opI32Const}, sleb32(YieldEvery)...)

	var check []byte
	check = append(append(append(check, opGlobalGet), count...), opI32Eqz, opIf, blockEmpty)
	check = append(append(append(check, every...), opGlobalSet), count...)
	check = append(check, opI32Const, 0, opMemoryGrow, 0, opDrop)
	check = append(append(append(check, opGlobalGet), flag...), opIf, blockEmpty, opUnreachable, opEnd)
	check = append(check, opEnd)
	check = append(append(append(check, opGlobalGet), count...), opI32Const, 1, opI32Sub, opGlobalSet)
	check = append(check, count...)

	// Two mutable i32 globals: the flag (0) and the countdown.
	globals := []byte{0x7F, 0x01, opI32Const, 0x00, opEnd}
	globals = append(append(append(globals, 0x7F, 0x01), every...), opEnd)
	export := append(uleb(uint64(len(InterruptExport))), InterruptExport...)
	export = append(export, exportGlob)
	export = append(export, flag...)

	var out bytes.Buffer
	out.WriteString("\x00asm\x01\x00\x00\x00")
	wroteGlobal, wroteExport := false, false
	// ensure writes the sections the module lacks before the first section
	// that must follow them.
	ensure := func(next byte) {
		if !wroteGlobal && order(next) > order(secGlobal) {
			writeSection(&out, section{id: secGlobal, body: append([]byte{2}, globals...)})
			wroteGlobal = true
		}
		if !wroteExport && order(next) > order(secExport) {
			writeSection(&out, section{id: secExport, body: append([]byte{1}, export...)})
			wroteExport = true
		}
	}
	for _, s := range m.sections {
		if s.id == secCustom {
			if isDebugSection(s.body) {
				continue
			}
			writeSection(&out, s)
			continue
		}
		ensure(s.id)
		var err error
		switch s.id {
		case secGlobal:
			s.body, err = appendToVector(s.body, 2, globals)
			wroteGlobal = true
		case secExport:
			s.body, err = appendToVector(s.body, 1, export)
			wroteExport = true
		case secCode:
			s.body, err = instrumentCode(s.body, check)
		}
		if err != nil {
			return nil, err
		}
		writeSection(&out, s)
	}
	ensure(0xFF)
	return out.Bytes(), nil
}

// isDebugSection reports whether a custom section is DWARF (".debug_*").
func isDebugSection(body []byte) bool {
	r := &reader{b: body}
	name := r.bytes(int(r.u32()))
	return r.err == nil && bytes.HasPrefix(name, []byte(".debug_"))
}

// appendToVector adds n encoded elements to a section that is a vector.
func appendToVector(body []byte, n uint64, elems []byte) ([]byte, error) {
	r := &reader{b: body}
	had := r.u32()
	if r.err != nil {
		return nil, r.err
	}
	out := uleb(uint64(had) + n)
	out = append(out, body[r.off:]...)
	return append(out, elems...), nil
}

// instrumentCode inserts check after the block type of every loop of every
// function body in the code section.
func instrumentCode(body, check []byte) ([]byte, error) {
	r := &reader{b: body}
	n := r.u32()
	var out bytes.Buffer
	out.Write(uleb(uint64(n)))
	var fn bytes.Buffer
	for i := uint32(0); i < n && r.err == nil; i++ {
		size := r.u32()
		code := r.bytes(int(size))
		if r.err != nil {
			break
		}
		fn.Reset()
		if err := instrumentBody(&fn, code, check); err != nil {
			return nil, fmt.Errorf("function body %d: %w", i, err)
		}
		out.Write(uleb(uint64(fn.Len())))
		out.Write(fn.Bytes())
	}
	if r.err != nil {
		return nil, fmt.Errorf("code section: %w", r.err)
	}
	if r.off != len(body) {
		return nil, fmt.Errorf("code section: %d trailing bytes", len(body)-r.off)
	}
	return out.Bytes(), nil
}

// instrumentBody copies one function body to out, check after each loop.
func instrumentBody(out *bytes.Buffer, code, check []byte) error {
	r := &reader{b: code}
	groups := r.u32()
	for i := uint32(0); i < groups && r.err == nil; i++ {
		r.u32()
		if t := r.byte(); !isValType(t) {
			return fmt.Errorf("local of type %#x: %w", t, ErrUnsupported)
		}
	}
	from := 0
	for r.err == nil && r.off < len(code) {
		op := r.byte()
		if err := r.skipImmediates(op); err != nil {
			return err
		}
		if op == opLoop && r.err == nil {
			out.Write(code[from:r.off])
			out.Write(check)
			from = r.off
		}
	}
	if r.err != nil {
		return r.err
	}
	out.Write(code[from:])
	return nil
}

func isValType(t byte) bool {
	switch t {
	case 0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F: // i32 i64 f32 f64 v128 funcref externref
		return true
	}
	return false
}

// skipImmediates reads the immediates of the instruction op.
func (r *reader) skipImmediates(op byte) error {
	switch {
	case op == 0x02 || op == opLoop || op == opIf: // block, loop, if: block type
		r.blockType()
	case op <= 0x01, op == 0x05, op == opEnd, op == 0x0F, // unreachable nop else end return
		op == 0x1A, op == 0x1B, // drop select
		op >= 0x45 && op <= 0xC4, // numeric, sign extension
		op == 0xD1:               // ref.is_null
	case op == 0x0C || op == 0x0D, // br br_if
		op >= 0x20 && op <= 0x26, // local.*, global.*, table.get/set
		op == 0x10,               // call
		op == 0xD2:               // ref.func
		r.u32()
	case op == 0x0E: // br_table
		for n := r.u32(); n > 0 && r.err == nil; n-- {
			r.u32()
		}
		r.u32()
	case op == 0x11: // call_indirect
		r.u32()
		r.u32()
	case op == 0x1C: // select t*
		for n := r.u32(); n > 0 && r.err == nil; n-- {
			if t := r.byte(); !isValType(t) {
				return fmt.Errorf("select of type %#x: %w", t, ErrUnsupported)
			}
		}
	case op >= 0x28 && op <= 0x3E: // loads and stores
		r.memarg()
	case op == 0x3F || op == 0x40: // memory.size memory.grow
		r.u32()
	case op == 0x41:
		r.leb(32, true)
	case op == 0x42:
		r.leb(64, true)
	case op == 0x43:
		r.bytes(4)
	case op == 0x44:
		r.bytes(8)
	case op == 0xD0: // ref.null
		if t := r.byte(); t != 0x70 && t != 0x6F {
			return fmt.Errorf("ref.null of type %#x: %w", t, ErrUnsupported)
		}
	case op == 0xFC:
		return r.skipMisc()
	case op == 0xFD:
		return r.skipSIMD()
	case op == 0xFE:
		return r.skipAtomic()
	default:
		return fmt.Errorf("opcode %#x: %w", op, ErrUnsupported)
	}
	return r.err
}

// blockType reads a block type: empty, a value type, or a type index.
func (r *reader) blockType() {
	if r.off < len(r.b) && (r.b[r.off] == blockEmpty || isValType(r.b[r.off])) {
		r.off++
		return
	}
	r.leb(33, true)
}

// memarg reads alignment (with the multi-memory flag) and offset.
func (r *reader) memarg() {
	if align := r.u32(); align&(1<<6) != 0 {
		r.u32() // memory index
	}
	r.leb(64, false)
}

// skipMisc reads a 0xFC instruction: saturating truncation, bulk memory
// and table operations.
func (r *reader) skipMisc() error {
	switch sub := r.u32(); {
	case sub <= 7:
	case sub == 9, sub == 11, sub == 13, sub >= 15 && sub <= 17:
		r.u32()
	case sub == 8, sub == 10, sub == 12, sub == 14:
		r.u32()
		r.u32()
	default:
		return fmt.Errorf("opcode 0xfc %d: %w", sub, ErrUnsupported)
	}
	return r.err
}

// skipSIMD reads a 0xFD instruction (fixed-width and relaxed SIMD).
func (r *reader) skipSIMD() error {
	switch sub := r.u32(); {
	case sub <= 11, sub == 92, sub == 93: // loads, stores
		r.memarg()
	case sub == 12, sub == 13: // v128.const, i8x16.shuffle
		r.bytes(16)
	case sub >= 21 && sub <= 34: // extract and replace lane
		r.byte()
	case sub >= 84 && sub <= 91: // load and store lane
		r.memarg()
		r.byte()
	case sub <= 0x113:
	default:
		return fmt.Errorf("opcode 0xfd %d: %w", sub, ErrUnsupported)
	}
	return r.err
}

// skipAtomic reads a 0xFE instruction (threads).
func (r *reader) skipAtomic() error {
	switch sub := r.u32(); {
	case sub == 3: // atomic.fence
		r.byte()
	case sub <= 2, sub >= 0x10 && sub <= 0x4E:
		r.memarg()
	default:
		return fmt.Errorf("opcode 0xfe %d: %w", sub, ErrUnsupported)
	}
	return r.err
}
