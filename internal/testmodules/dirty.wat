;; dirty: a command that checks that all of its memory is zero, as a fresh
;; instance's must be, then fills it with 0xff. Stdin's first byte, a digit
;; d, grows the memory by 8*d pages first (64 KiB each), so a test can make
;; it use a little memory or a lot. It prints "clean\n" when every byte was
;; zero and "dirty\n" when an earlier instance's bytes showed through.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1 512)
  ;; $zero reports whether [i, end) holds only zeros.
  (func $zero (param $i i32) (param $end i32) (result i32)
    (block $done
      (loop $check
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (if (i64.ne (i64.load (local.get $i)) (i64.const 0))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $check)))
    (i32.const 1))
  (func (export "_start")
    (local $clean i32) (local $size i32)
    (local.set $clean (call $zero (i32.const 0) (i32.const 65536)))
    ;; read one byte of stdin to offset 0 (iovec at 16, count at 24)
    (i32.store (i32.const 16) (i32.const 0))
    (i32.store (i32.const 20) (i32.const 1))
    (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
    (if (i32.eq (i32.load (i32.const 24)) (i32.const 1))
      (then (drop (memory.grow
        (i32.mul (i32.sub (i32.load8_u (i32.const 0)) (i32.const 48)) (i32.const 8))))))
    (local.set $size (i32.mul (memory.size) (i32.const 65536)))
    (local.set $clean (i32.and (local.get $clean) (call $zero (i32.const 65536) (local.get $size))))
    (memory.fill (i32.const 0) (i32.const 255) (local.get $size))
    ;; "clean\n" or "dirty\n" at 32, its iovec at 16
    (if (local.get $clean)
      (then
        (i32.store (i32.const 32) (i32.const 0x61656c63))   ;; "clea"
        (i32.store16 (i32.const 36) (i32.const 0x0a6e)))    ;; "n\n"
      (else
        (i32.store (i32.const 32) (i32.const 0x74726964))   ;; "dirt"
        (i32.store16 (i32.const 36) (i32.const 0x0a79))))  ;; "y\n"
    (i32.store (i32.const 16) (i32.const 32))
    (i32.store (i32.const 20) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))
