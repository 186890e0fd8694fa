;; uninstrumentable: spins forever like loop, but already exports the name
;; of kindling's interrupt flag, so kindling cannot instrument it and runs
;; it in the runtime that closes modules when their deadline passes.
(module
  (memory (export "memory") 1)
  (func (export "kindling:interrupt"))
  (func (export "_start") (loop $forever (br $forever))))
