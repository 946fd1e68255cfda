/**
 * The dot product of `dot` (vector-index.ts) as a WebAssembly SIMD kernel, for exact scans: a JavaScript
 * loop over float32 arrays costs about 2 µs per 512-d vector on the benchmark machine, this about 0.5.
 *
 * Bit-equal to `dot`, not merely close: the query is stored as float64 (its float32 values promoted,
 * exactly), each vector component is promoted to float64 in the same way JavaScript reads a
 * Float32Array, products and sums are float64 (no fused multiply-add in WebAssembly), and the eight
 * running sums and their final additions are `dot`'s, in the same order. So an exact scan through this
 * kernel and a graph search rescored by `dot` give the same score to the bit, and ties break the same.
 *
 * The module is assembled here from its opcodes (no toolchain in the build), 200 bytes:
 *
 *   (func (export "dot") (param $q i32) (param $b i32) (param $n i32) (result f64)
 *     ;; $q: n float64 (the query), $b: n float32 (a vector), n a multiple of 8
 *     $end = $b + 4n
 *     loop while $b < $end:
 *       y0 = v128.load $b; y1 = v128.load $b+16
 *       c0 += f64x2.load $q    × promote_low(y0)        ;; sums s0 s1
 *       c1 += f64x2.load $q+16 × promote_low(swap(y0))  ;; s2 s3
 *       c2 += f64x2.load $q+32 × promote_low(y1)        ;; s4 s5
 *       c3 += f64x2.load $q+48 × promote_low(swap(y1))  ;; s6 s7
 *       $q += 64; $b += 32
 *     return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
 */

/** The little of the WebAssembly API used here (the compiler's lib has no WebAssembly types). */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Memory: new (descriptor: { initial: number }) => WasmMemory;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
}
const wasm = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;

export interface SimdDot {
  /** The memory the kernel reads: the caller lays out query and vectors in it. */
  readonly memory: WasmMemory;
  /** dot(query at byte `q` as float64, vector at byte `b` as float32, `n` components, a multiple of 8). */
  readonly dot: (q: number, b: number, n: number) => number;
}

const leb = (value: number): number[] => {
  const out: number[] = [];
  do {
    let byte = value & 0x7f;
    value >>>= 7;
    if (value !== 0) byte |= 0x80;
    out.push(byte);
  } while (value !== 0);
  return out;
};
const section = (id: number, bytes: number[]): number[] => [id, ...leb(bytes.length), ...bytes];
const name = (text: string): number[] => [text.length, ...Array.from(text, (c) => c.charCodeAt(0))];

function moduleBytes(): Uint8Array {
  const simd = (op: number) => [0xfd, ...leb(op)];
  const get = (i: number) => [0x20, i];
  const set = (i: number) => [0x21, i];
  const tee = (i: number) => [0x22, i];
  const i32const = (v: number) => [0x41, ...(v < 64 ? [v] : [0x80 | (v & 0x7f), v >> 7])]; // signed LEB128, 0..8191
  const v128load = (offset: number, align: number) => [...simd(0x00), align, ...leb(offset)];
  const promoteLow = simd(0x5f); // f64x2.promote_low_f32x4
  const mul = simd(0xf2); // f64x2.mul
  const add = simd(0xf0); // f64x2.add
  const swapHalves = [...simd(0x0d), 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7]; // i8x16.shuffle
  const lane = (i: number) => [...simd(0x21), i]; // f64x2.extract_lane
  const f64add = [0xa0];
  const [Q, B, N, END, C0, C1, C2, C3, Y0, Y1] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] as const;
  const accumulate = (c: number, qOffset: number, y: number, high: boolean) => [
    ...get(c),
    ...get(Q), ...v128load(qOffset, 3),
    ...get(y), ...(high ? [...get(y), ...swapHalves] : []), ...promoteLow,
    ...mul, ...add, ...set(c),
  ];
  const pairSum = (c: number) => [...get(c), ...lane(0), ...get(c), ...lane(1), ...f64add];
  const body = [
    ...get(B), ...get(N), ...i32const(2), 0x74 /* i32.shl */, 0x6a /* i32.add */, ...set(END),
    0x02, 0x40, // block
    ...get(B), ...get(END), 0x4f /* i32.ge_u */, 0x0d, 0, // br_if out of the block
    0x03, 0x40, // loop
    ...get(B), ...v128load(0, 4), ...set(Y0),
    ...get(B), ...v128load(16, 4), ...set(Y1),
    ...accumulate(C0, 0, Y0, false),
    ...accumulate(C1, 16, Y0, true),
    ...accumulate(C2, 32, Y1, false),
    ...accumulate(C3, 48, Y1, true),
    ...get(Q), ...i32const(64), 0x6a, ...set(Q),
    ...get(B), ...i32const(32), 0x6a, ...tee(B), ...get(END), 0x49 /* i32.lt_u */, 0x0d, 0, // br_if back to the loop
    0x0b, // end loop
    0x0b, // end block
    ...pairSum(C0), ...pairSum(C1), ...f64add,
    ...pairSum(C2), ...pairSum(C3), ...f64add,
    ...f64add,
    0x0b,
  ];
  const func = [2, 1, 0x7f /* one i32 */, 6, 0x7b /* six v128 */, ...body];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0,
    ...section(1, [1, 0x60, 3, 0x7f, 0x7f, 0x7f, 1, 0x7c]), // type: (i32, i32, i32) -> f64
    ...section(2, [1, ...name("env"), ...name("memory"), 0x02, 0x00, 0x00]), // import env.memory, min 0
    ...section(3, [1, 0]),
    ...section(7, [1, ...name("dot"), 0x00, 0]),
    ...section(10, [1, ...leb(func.length), ...func]),
  ]);
}

let compiled: object | null | undefined;

/** The kernel over a new memory of `pages` 64 KiB pages, or undefined where WebAssembly SIMD is missing. */
export function simdDot(pages: number): SimdDot | undefined {
  if (compiled === undefined) {
    try {
      compiled = wasm ? new wasm.Module(moduleBytes()) : null;
    } catch {
      compiled = null;
    }
  }
  if (compiled === null || !wasm) return undefined;
  const memory = new wasm.Memory({ initial: pages });
  const instance = new wasm.Instance(compiled, { env: { memory } });
  return { memory, dot: instance.exports.dot as SimdDot["dot"] };
}
