// Reads a GGUF file with @huggingface/gguf (Hugging Face's reader, independent of fedcal) and prints
// what it found as JSON: metadata (integers as numbers), every tensor's name, shape (ne[0] first),
// ggml type number and absolute byte offset in the file.
//   node gguf_dump.mjs FILE.gguf
import { gguf } from "@huggingface/gguf";
import path from "node:path";

const file = path.resolve(process.argv[2]);
const { metadata, tensorInfos, tensorDataOffset } = await gguf(file, { allowLocalFile: true });
const plain = (value) => (typeof value === "bigint" ? Number(value) : Array.isArray(value) ? value.map(plain) : value);
const out = { metadata: {}, tensors: [] };
for (const [key, value] of Object.entries(metadata)) out.metadata[key] = plain(value);
for (const info of tensorInfos) {
  out.tensors.push({
    name: info.name,
    shape: info.shape.map(Number),
    type: info.dtype,
    file_offset: Number(tensorDataOffset + info.offset),
  });
}
process.stdout.write(JSON.stringify(out));
