// Encodes a text file with transformers.js's tokenizer implementation (npm @lenml/tokenizers, which
// packages it), the reference fedcal's byte-level BPE tokenizer is tested against.
//   node tokenize.mjs TOKENIZER_JSON TOKENIZER_CONFIG_JSON TEXT_FILE OUT_FILE
// The text is read as UTF-8 (invalid bytes become U+FFFD, as JavaScript strings cannot hold them) and
// encoded as one string without special tokens added; OUT_FILE gets the ids, one per line.
import { readFileSync, writeFileSync } from "node:fs";
import { TokenizerLoader } from "@lenml/tokenizers";

const [tokenizerPath, configPath, textPath, outPath] = process.argv.slice(2);
if (!outPath) {
  console.error("usage: node tokenize.mjs TOKENIZER_JSON TOKENIZER_CONFIG_JSON TEXT_FILE OUT_FILE");
  process.exit(2);
}
const tokenizer = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(readFileSync(tokenizerPath, "utf8")),
  tokenizerConfig: JSON.parse(readFileSync(configPath, "utf8")),
});
const text = new TextDecoder("utf-8").decode(readFileSync(textPath));
const ids = tokenizer.encode(text, { add_special_tokens: false });
writeFileSync(outPath, ids.join("\n") + "\n");
