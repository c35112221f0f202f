#include "tests/png_image.h"

#include <zlib.h>

#include <cstdlib>
#include <fstream>
#include <iterator>

#include "common/error.h"

namespace fedcal::testing {
namespace {

uint32_t big_endian(const std::string& bytes, size_t at) {
  return (uint32_t{static_cast<uint8_t>(bytes[at])} << 24) | (uint32_t{static_cast<uint8_t>(bytes[at + 1])} << 16) |
         (uint32_t{static_cast<uint8_t>(bytes[at + 2])} << 8) | uint32_t{static_cast<uint8_t>(bytes[at + 3])};
}

// The Paeth predictor of the PNG specification (section 9.4).
uint8_t paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return static_cast<uint8_t>(pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
}

}  // namespace

PngImage PngImage::read(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) fail("{}: cannot open", path);
  const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (bytes.size() < 8 || bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) fail("{}: not a PNG file", path);
  PngImage image;
  int channels = 0;
  std::string compressed;
  for (size_t at = 8; at + 12 <= bytes.size();) {
    const uint32_t length = big_endian(bytes, at);
    const std::string type = bytes.substr(at + 4, 4);
    if (at + 12 + length > bytes.size()) fail("{}: chunk '{}' runs past the end of the file", path, type);
    const size_t data = at + 8;
    if (type == "IHDR") {
      image.width = big_endian(bytes, data);
      image.height = big_endian(bytes, data + 4);
      const int depth = static_cast<uint8_t>(bytes[data + 8]), colour = static_cast<uint8_t>(bytes[data + 9]);
      const int interlace = static_cast<uint8_t>(bytes[data + 12]);
      if (depth != 8 || (colour != 2 && colour != 6) || interlace != 0)
        fail("{}: bit depth {}, colour type {}, interlace {} (only 8-bit RGB/RGBA, not interlaced)", path, depth, colour, interlace);
      if (image.width == 0 || image.height == 0 || image.width > 16384 || image.height > 16384)
        fail("{}: {}x{} pixels", path, image.width, image.height);
      channels = colour == 6 ? 4 : 3;
    } else if (type == "IDAT") {
      compressed += bytes.substr(data, length);
    } else if (type == "IEND") {
      break;
    }
    at += 12 + length;
  }
  if (channels == 0) fail("{}: no IHDR chunk", path);
  const size_t stride = size_t{image.width} * channels;
  std::vector<uint8_t> raw((stride + 1) * image.height);
  uLongf raw_size = raw.size();
  if (::uncompress(raw.data(), &raw_size, reinterpret_cast<const Bytef*>(compressed.data()), compressed.size()) != Z_OK ||
      raw_size != raw.size())
    fail("{}: the image data does not inflate to {}x{} pixels", path, image.width, image.height);
  // Undo each row's filter in place (the row above is already unfiltered).
  for (size_t y = 0; y < image.height; ++y) {
    uint8_t* row = raw.data() + y * (stride + 1);
    const int filter = row[0];
    uint8_t* line = row + 1;
    const uint8_t* above = y > 0 ? line - (stride + 1) : nullptr;
    for (size_t x = 0; x < stride; ++x) {
      const int left = x >= static_cast<size_t>(channels) ? line[x - channels] : 0;
      const int up = above ? above[x] : 0;
      const int up_left = above && x >= static_cast<size_t>(channels) ? above[x - channels] : 0;
      switch (filter) {
        case 0: break;
        case 1: line[x] = static_cast<uint8_t>(line[x] + left); break;
        case 2: line[x] = static_cast<uint8_t>(line[x] + up); break;
        case 3: line[x] = static_cast<uint8_t>(line[x] + (left + up) / 2); break;
        case 4: line[x] = static_cast<uint8_t>(line[x] + paeth(left, up, up_left)); break;
        default: fail("{}: row {} has filter type {}", path, y, filter);
      }
    }
  }
  image.pixels.reserve(size_t{image.width} * image.height);
  for (size_t y = 0; y < image.height; ++y) {
    const uint8_t* line = raw.data() + y * (stride + 1) + 1;
    for (size_t x = 0; x < image.width; ++x) image.pixels.push_back({line[x * channels], line[x * channels + 1], line[x * channels + 2]});
  }
  return image;
}

size_t PngImage::count(Rgb colour, int tolerance) const {
  size_t n = 0;
  for (const Rgb& p : pixels) {
    n += std::abs(p.r - colour.r) <= tolerance && std::abs(p.g - colour.g) <= tolerance && std::abs(p.b - colour.b) <= tolerance;
  }
  return n;
}

}  // namespace fedcal::testing
