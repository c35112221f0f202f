// Runs an ONNX graph in ONNX Runtime (onnxruntime-node, Microsoft's CPU build, independent of fedcal)
// on sequences of token ids and writes their logits.
//   node onnx_run.mjs MODEL.onnx IDS.txt LOGITS.f32
// IDS.txt: one sequence per line, whitespace-separated token ids, each run from position 0.
// LOGITS.f32: float32 little-endian, every sequence's (length, vocab) logits one after another.
// Prints JSON: the runtime's version and the number of sequences run.
import ort from "onnxruntime-node";
import fs from "node:fs";

const [modelPath, idsPath, outPath] = process.argv.slice(2);
const lines = fs.readFileSync(idsPath, "utf8").split("\n").filter((line) => line.trim() !== "");
// session.x64quantprecision: on x86 without VNNI, ONNX Runtime's U8S8 kernels (vpmaddubsw) saturate
// 16-bit pair sums of full-range INT8 weights; the option runs those MatMuls as U8U8 instead. Without
// it, on an AVX2-only CPU, the project model's QDQ graph agreed with fedcal's INT8 engine on 0.945 of
// top-1 predictions (0.990 with it; VNNI CPUs agree either way). A device without VNNI needs it too.
const session = await ort.InferenceSession.create(modelPath, {
  graphOptimizationLevel: "all",
  intraOpNumThreads: 1,
  extra: { session: { x64quantprecision: "1" } },
});
const out = fs.openSync(outPath, "w");
for (const line of lines) {
  const ids = BigInt64Array.from(line.trim().split(/\s+/).map((t) => BigInt(t)));
  const { logits } = await session.run({ input_ids: new ort.Tensor("int64", ids, [1, ids.length]) });
  const data = logits.data;
  fs.writeSync(out, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
}
fs.closeSync(out);
process.stdout.write(JSON.stringify({ onnxruntime: ort.env.versions.common, sequences: lines.length }));
