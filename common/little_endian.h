// Byte order of every fedcal file format and message: little-endian, everywhere.
//
// The llama2.c checkpoint, safetensors, the model package (manifest length, tensor data, trailer),
// `.stats` files (header length and counts) and the statistics vectors on the wire all store their
// numbers little-endian. fedcal reads and writes them by copying memory, which is exact on a
// little-endian host (x86-64, AArch64, ARMv7, RISC-V: every device fedcal targets). Rather than
// silently writing host order on a big-endian machine, such a build is refused here; each reader and
// writer of those formats includes this header, so the contract is stated and checked in one place.
#pragma once

#include <bit>

namespace fedcal {

static_assert(std::endian::native == std::endian::little,
              "fedcal's file formats and wire vectors are little-endian and are read by copying memory: "
              "a big-endian host needs byte swaps in common/byte_reader.h, the .stats and package "
              "readers/writers and protocol/wire.cpp");

}  // namespace fedcal
