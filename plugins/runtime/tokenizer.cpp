/*
 * debx runtime: DeBERTa tokenizer (see tokenizer.h for the pipeline).
 */
#include "tokenizer.h"

#include <algorithm>
#include <cstring>
#include <tuple>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>
#include <utf8proc.h>

namespace debx
{
namespace runtime
{
namespace
{

constexpr char const* kMetaspace = "\xE2\x96\x81"; // U+2581 "▁"
constexpr double kUnkPenalty = 10.0;                // unknown characters score min_score - 10 (Unigram's rule)

//! Unicode White_Space: what the regex \s of the normalizer and the right strip treat as whitespace.
bool isWhitespace(int32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680
        || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F
        || cp == 0x3000;
}

//! Decode UTF-8 into code points (invalid bytes become U+FFFD, as a lossy decoder would).
std::vector<int32_t> decode(std::string const& s)
{
    std::vector<int32_t> cps;
    auto const* p = reinterpret_cast<utf8proc_uint8_t const*>(s.data());
    utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(s.size());
    while (left > 0)
    {
        utf8proc_int32_t cp = 0;
        utf8proc_ssize_t const n = utf8proc_iterate(p, left, &cp);
        if (n <= 0)
        {
            cps.push_back(0xFFFD);
            p += 1;
            left -= 1;
            continue;
        }
        cps.push_back(cp);
        p += n;
        left -= n;
    }
    return cps;
}

void appendUtf8(std::string& out, int32_t cp)
{
    utf8proc_uint8_t buffer[4];
    utf8proc_ssize_t const n = utf8proc_encode_char(cp, buffer);
    out.append(reinterpret_cast<char const*>(buffer), static_cast<size_t>(n));
}

//! Replace(/\s{2,}|[\n\r\t]/, " ") -> NFC -> strip right.
std::string normalizeSegment(std::string const& segment)
{
    std::vector<int32_t> const cps = decode(segment);
    std::string replaced;
    replaced.reserve(segment.size());
    for (size_t i = 0; i < cps.size();)
    {
        if (isWhitespace(cps[i]))
        {
            size_t run = i;
            while (run < cps.size() && isWhitespace(cps[run]))
            {
                ++run;
            }
            if (run - i >= 2)
            {
                replaced.push_back(' '); // a run of two or more whitespace characters
                i = run;
                continue;
            }
            if (cps[i] == '\n' || cps[i] == '\r' || cps[i] == '\t')
            {
                replaced.push_back(' ');
                ++i;
                continue;
            }
        }
        appendUtf8(replaced, cps[i]);
        ++i;
    }
    // NFC with an explicit length (utf8proc_NFC stops at the first NUL byte: U+0000 is text here, as in transformers)
    utf8proc_uint8_t* nfc = nullptr;
    utf8proc_ssize_t const nfcBytes = utf8proc_map(reinterpret_cast<utf8proc_uint8_t const*>(replaced.data()),
        static_cast<utf8proc_ssize_t>(replaced.size()), &nfc,
        static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    if (nfcBytes < 0)
    {
        throw std::runtime_error("text is not valid UTF-8");
    }
    std::string normalized(reinterpret_cast<char const*>(nfc), static_cast<size_t>(nfcBytes));
    std::free(nfc);
    std::vector<int32_t> out = decode(normalized);
    while (!out.empty() && isWhitespace(out.back()))
    {
        out.pop_back();
    }
    std::string stripped;
    for (int32_t cp : out)
    {
        appendUtf8(stripped, cp);
    }
    return stripped;
}

//! Byte offsets of the code point starts of s, plus s.size().
std::vector<size_t> charStarts(std::string const& s)
{
    std::vector<size_t> starts;
    for (size_t i = 0; i < s.size(); ++i)
    {
        if ((static_cast<unsigned char>(s[i]) & 0xC0U) != 0x80U)
        {
            starts.push_back(i);
        }
    }
    starts.push_back(s.size());
    return starts;
}

namespace fs = std::filesystem;

std::string readFile(fs::path const& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        throw std::runtime_error(path.string() + ": cannot read");
    }
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

//! A JSON file of the checkpoint, or null when the folder has none.
nlohmann::json readJson(fs::path const& path)
{
    if (!fs::is_regular_file(path))
    {
        return nullptr;
    }
    try
    {
        return nlohmann::json::parse(readFile(path));
    }
    catch (nlohmann::json::exception const&)
    {
        throw std::runtime_error(path.string() + ": not valid JSON");
    }
}

std::string base64Decode(std::string const& in)
{
    std::string out;
    uint32_t buffer = 0;
    int bits = 0;
    for (char c : in)
    {
        int v = -1;
        if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '+')
            v = 62;
        else if (c == '/')
            v = 63;
        else if (c == '=')
            break;
        else
            continue;
        buffer = (buffer << 6) | static_cast<uint32_t>(v);
        bits += 6;
        if (bits >= 8)
        {
            bits -= 8;
            out.push_back(static_cast<char>((buffer >> bits) & 0xFFU));
        }
    }
    return out;
}

//! The first length-delimited field `field` of a serialized protobuf message ("" when absent).
std::string protoBytesField(std::string const& message, uint32_t field)
{
    size_t pos = 0;
    auto varint = [&](uint64_t& v) {
        v = 0;
        for (int shift = 0; pos < message.size() && shift < 64; shift += 7)
        {
            auto const b = static_cast<uint8_t>(message[pos++]);
            v |= static_cast<uint64_t>(b & 0x7FU) << shift;
            if ((b & 0x80U) == 0)
                return true;
        }
        return false;
    };
    while (pos < message.size())
    {
        uint64_t key = 0;
        uint64_t n = 0;
        if (!varint(key))
            break;
        switch (key & 7U)
        {
        case 0:
            if (!varint(n))
                return "";
            break;
        case 1: pos += 8; break;
        case 5: pos += 4; break;
        case 2:
            if (!varint(n) || n > message.size() - pos)
                return "";
            if ((key >> 3) == field)
                return message.substr(pos, static_cast<size_t>(n));
            pos += static_cast<size_t>(n);
            break;
        default: return "";
        }
    }
    return "";
}

//! Every step type of a tokenizers normalizer / pre-tokenizer (flattening Sequence), e.g. {"Strip", "Precompiled"}.
void stepTypes(nlohmann::json const& step, char const* list, std::vector<nlohmann::json>& out)
{
    if (!step.is_object())
    {
        return;
    }
    auto const type = step.find("type");
    if (type != step.end() && *type == "Sequence" && step.contains(list))
    {
        for (auto const& inner : step[list])
        {
            stepTypes(inner, list, out);
        }
        return;
    }
    out.push_back(step);
}

bool hasStep(std::vector<nlohmann::json> const& steps, char const* type)
{
    return std::any_of(
        steps.begin(), steps.end(), [&](nlohmann::json const& s) { return s.value("type", "") == type; });
}

// darts-clone double-array units (SentencePiece's precompiled charsmap trie)
uint32_t unitOffset(uint32_t u)
{
    return (u >> 10) << ((u & (1U << 9)) >> 6);
}
uint32_t unitLabel(uint32_t u)
{
    return u & ((1U << 31) | 0xFFU);
}
bool unitHasLeaf(uint32_t u)
{
    return ((u >> 8) & 1U) == 1U;
}

} // namespace

char const* normalizationName(Normalization mode)
{
    switch (mode)
    {
    case Normalization::kAuto: return "auto";
    case Normalization::kTransformers: return "transformers5";
    case Normalization::kTransformers4: return "transformers4";
    case Normalization::kSentencePiece: return "sentencepiece";
    }
    return "?";
}

std::pair<Normalization, std::string> checkpointNormalization(std::string const& folder)
{
    fs::path const dir(folder.empty() ? "." : folder);
    nlohmann::json const config = readJson(dir / "tokenizer_config.json");
    if (config.is_object() && (config.value("do_lower_case", false) || config.value("split_by_punct", false)))
    {
        throw std::runtime_error((dir / "tokenizer_config.json").string()
            + ": do_lower_case / split_by_punct tokenizers are not reproduced by the C++ tokenizer");
    }
    nlohmann::json const tokenizer = readJson(dir / "tokenizer.json");
    if (tokenizer.is_object())
    {
        std::string const where = (dir / "tokenizer.json").string();
        std::vector<nlohmann::json> steps;
        std::vector<nlohmann::json> pre;
        stepTypes(tokenizer.value("normalizer", nlohmann::json()), "normalizers", steps);
        stepTypes(tokenizer.value("pre_tokenizer", nlohmann::json()), "pretokenizers", pre);
        if (hasStep(steps, "Lowercase") || hasStep(pre, "Punctuation"))
        {
            throw std::runtime_error(where + ": lower-casing / punctuation splitting is not reproduced by the C++ "
                                             "tokenizer");
        }
        if (hasStep(steps, "Precompiled"))
        {
            return {Normalization::kTransformers4,
                where + ": its normalizer has a Precompiled (NFKC charsmap) step, as transformers 4 writes it"};
        }
        if (hasStep(steps, "NFC"))
        {
            return {Normalization::kTransformers, where + ": its normalizer is transformers 5's (NFC, no charsmap)"};
        }
        std::string types;
        for (auto const& s : steps)
        {
            types += (types.empty() ? "" : ", ") + s.value("type", std::string("?"));
        }
        throw std::runtime_error(where + ": normalizer [" + types + "] is neither transformers 4's nor 5's");
    }
    nlohmann::json const model = readJson(dir / "config.json");
    if (model.is_object() && model.contains("transformers_version") && model["transformers_version"].is_string())
    {
        std::string const version = model["transformers_version"];
        int const major = std::atoi(version.c_str());
        std::string const why = (dir / "config.json").string() + ": written by transformers " + version;
        return {major > 0 && major < 5 ? Normalization::kTransformers4 : Normalization::kTransformers, why};
    }
    return {Normalization::kTransformers,
        "no tokenizer.json or config.json with a transformers version in " + dir.string() + ": transformers 5's"};
}

std::pair<size_t, size_t> truncatedPairLengths(size_t first, size_t second, size_t budget)
{
    if (first + second <= budget)
    {
        return {first, second};
    }
    // Give the shorter input all it needs if the longer one can still keep as much; otherwise split the budget in
    // half, the odd token going to the longer input (to the second one when both are equally long).
    bool const swapped = first > second;
    size_t shortLen = swapped ? second : first;
    size_t longLen = shortLen > budget ? shortLen : std::max(shortLen, budget - shortLen);
    if (shortLen + longLen > budget)
    {
        shortLen = budget / 2;
        longLen = shortLen + budget % 2;
    }
    return swapped ? std::make_pair(longLen, shortLen) : std::make_pair(shortLen, longLen);
}

DebertaTokenizer::DebertaTokenizer(std::string const& path, Normalization mode)
    : mProcessor(std::make_unique<sentencepiece::SentencePieceProcessor>())
    , mMode(mode)
{
    bool const folder = fs::is_directory(path);
    fs::path const dir = folder ? fs::path(path) : fs::path(path).parent_path();
    std::string const spmModelPath = folder ? (dir / "spm.model").string() : path;
    if (folder && !fs::is_regular_file(spmModelPath))
    {
        throw std::runtime_error(path + ": no spm.model in this folder (the C++ tokenizer needs the SentencePiece "
                                        "model; `debx export` writes it beside the model)");
    }
    auto const status = mProcessor->Load(spmModelPath);
    if (!status.ok())
    {
        throw std::runtime_error(spmModelPath + ": cannot load SentencePiece model (" + status.ToString() + ")");
    }
    if (mMode == Normalization::kAuto)
    {
        std::tie(mMode, mModeReason) = checkpointNormalization(dir.string());
    }
    else
    {
        mModeReason = std::string("chosen explicitly (") + normalizationName(mMode) + ")";
    }
    if (mMode == Normalization::kTransformers4)
    {
        // transformers 4 uses tokenizer.json's copy of the charsmap when there is one, else converts spm.model's
        std::string blob;
        nlohmann::json const tokenizer = readJson(dir / "tokenizer.json");
        std::vector<nlohmann::json> steps;
        if (tokenizer.is_object())
        {
            stepTypes(tokenizer.value("normalizer", nlohmann::json()), "normalizers", steps);
        }
        for (auto const& step : steps)
        {
            if (step.value("type", "") == "Precompiled" && step.contains("precompiled_charsmap")
                && step["precompiled_charsmap"].is_string())
            {
                blob = base64Decode(step["precompiled_charsmap"].get<std::string>());
            }
        }
        if (blob.empty())
        {
            std::string const proto = mProcessor->serialized_model_proto();
            blob = protoBytesField(protoBytesField(proto, 3), 2); // ModelProto.normalizer_spec.precompiled_charsmap
        }
        if (!blob.empty())
        {
            uint32_t trieBytes = 0;
            if (blob.size() < 4)
            {
                throw std::runtime_error(spmModelPath + ": precompiled charsmap is truncated");
            }
            std::memcpy(&trieBytes, blob.data(), 4); // little-endian, as x86 and ARM hosts are
            if (trieBytes % 4 != 0 || trieBytes > blob.size() - 4)
            {
                throw std::runtime_error(spmModelPath + ": precompiled charsmap is malformed");
            }
            mCharsmapTrie.resize(trieBytes / 4);
            std::memcpy(mCharsmapTrie.data(), blob.data() + 4, trieBytes);
            mCharsmapStrings = blob.substr(4 + trieBytes);
        }
    }
    int const size = mProcessor->GetPieceSize();
    double minScore = std::numeric_limits<double>::infinity();
    for (int id = 0; id < size; ++id)
    {
        std::string const& piece = mProcessor->IdToPiece(id);
        double const score = mProcessor->GetScore(id);
        minScore = std::min(minScore, score);
        mPieces.emplace(piece, std::make_pair(static_cast<int64_t>(id), score));
        mMaxPieceBytes = std::max(mMaxPieceBytes, piece.size());
        if (mProcessor->IsControl(id) || mProcessor->IsUnknown(id))
        {
            mSpecialTokens.push_back(SpecialToken{piece, id, false});
        }
    }
    mUnkScore = minScore - kUnkPenalty;
    auto idOf = [&](char const* piece, int64_t fallback) {
        auto it = mPieces.find(piece);
        return it == mPieces.end() ? fallback : it->second.first;
    };
    mPadId = idOf("[PAD]", 0);
    mClsId = idOf("[CLS]", 1);
    mSepId = idOf("[SEP]", 2);
    mUnkId = mProcessor->unk_id();
    // DeBERTa-v2/v3 append [MASK] after the SentencePiece vocabulary (128000 for the v3 model).
    mMaskId = idOf("[MASK]", size);
    if (mMaskId == size)
    {
        mSpecialTokens.push_back(SpecialToken{"[MASK]", mMaskId, false});
    }
    // tokenizer.json (else tokenizer_config.json's added_tokens_decoder) says which special tokens the tokenizers
    // library matches in the normalized text (transformers 4 marks [UNK] so); without either, all are matched in the
    // raw text, as transformers 5 does for a bare spm.model
    nlohmann::json added = readJson(dir / "tokenizer.json");
    added = added.is_object() ? added.value("added_tokens", nlohmann::json()) : nlohmann::json();
    if (!added.is_array())
    {
        nlohmann::json const config = readJson(dir / "tokenizer_config.json");
        nlohmann::json decoder = config.is_object() ? config.value("added_tokens_decoder", nlohmann::json()) : nullptr;
        added = nlohmann::json::array();
        if (decoder.is_object())
        {
            for (auto const& entry : decoder.items())
            {
                added.push_back(entry.value());
            }
        }
    }
    for (auto const& token : added)
    {
        for (SpecialToken& special : mSpecialTokens)
        {
            if (token.is_object() && token.value("content", "") == special.text)
            {
                special.normalized = token.value("normalized", false);
            }
        }
    }
}

DebertaTokenizer::~DebertaTokenizer() = default;

void DebertaTokenizer::viterbi(std::string const& word, std::vector<int64_t>& out) const
{
    std::vector<size_t> const starts = charStarts(word);
    size_t const nChars = starts.size() - 1;
    struct Best
    {
        double score;
        size_t prev; // char index where the last piece starts
        int64_t id;
    };
    std::vector<Best> best(nChars + 1, Best{-std::numeric_limits<double>::infinity(), 0, -1});
    best[0].score = 0.0;
    for (size_t s = 0; s < nChars; ++s)
    {
        if (best[s].score == -std::numeric_limits<double>::infinity())
        {
            continue;
        }
        bool singleChar = false;
        for (size_t e = s + 1; e <= nChars && starts[e] - starts[s] <= mMaxPieceBytes; ++e)
        {
            auto it = mPieces.find(word.substr(starts[s], starts[e] - starts[s]));
            if (it == mPieces.end())
            {
                continue;
            }
            singleChar = singleChar || e == s + 1;
            double const cand = best[s].score + it->second.second;
            if (cand > best[e].score)
            {
                best[e] = Best{cand, s, it->second.first};
            }
        }
        if (!singleChar) // no piece covers this character: one [UNK]
        {
            double const cand = best[s].score + mUnkScore;
            if (cand > best[s + 1].score)
            {
                best[s + 1] = Best{cand, s, mUnkId};
            }
        }
    }
    std::vector<int64_t> ids;
    for (size_t e = nChars; e > 0; e = best[e].prev)
    {
        ids.push_back(best[e].id);
    }
    std::reverse(ids.begin(), ids.end());
    for (int64_t id : ids)
    {
        if (id == mUnkId && !out.empty() && out.back() == mUnkId)
        {
            continue; // consecutive unknown characters become one [UNK]
        }
        out.push_back(id);
    }
}

std::string DebertaTokenizer::normalizeCharsmap(std::string const& segment) const
{
    // transformers 4 (tokenizers): Strip(both) -> Precompiled(charsmap) -> Replace(/ {2,}/, " ")
    std::vector<int32_t> cps = decode(segment);
    size_t begin = 0;
    size_t end = cps.size();
    while (begin < end && isWhitespace(cps[begin]))
    {
        ++begin;
    }
    while (end > begin && isWhitespace(cps[end - 1]))
    {
        --end;
    }
    // the replacement of the shortest charsmap key that prefixes `key` (tokenizers' Precompiled::transform)
    auto transform = [&](std::string const& key, std::string& out) {
        if (mCharsmapTrie.empty())
        {
            return false;
        }
        size_t node = unitOffset(mCharsmapTrie[0]);
        for (char ch : key)
        {
            auto const c = static_cast<uint8_t>(ch);
            if (c == 0)
            {
                return false;
            }
            node ^= c;
            if (node >= mCharsmapTrie.size() || unitLabel(mCharsmapTrie[node]) != c)
            {
                return false;
            }
            uint32_t const unit = mCharsmapTrie[node];
            node ^= unitOffset(unit);
            if (unitHasLeaf(unit))
            {
                if (node >= mCharsmapTrie.size())
                {
                    return false;
                }
                size_t const at = mCharsmapTrie[node] & ((1U << 31) - 1U);
                if (at > mCharsmapStrings.size())
                {
                    return false;
                }
                size_t const stop = mCharsmapStrings.find('\0', at);
                out.append(mCharsmapStrings, at, (stop == std::string::npos ? mCharsmapStrings.size() : stop) - at);
                return true;
            }
        }
        return false;
    };
    std::string mapped;
    utf8proc_int32_t state = 0;
    for (size_t g = begin; g < end;)
    {
        size_t next = g + 1; // extended grapheme cluster [g, next), as Rust's unicode-segmentation cuts it
        while (next < end && !utf8proc_grapheme_break_stateful(cps[next - 1], cps[next], &state))
        {
            ++next;
        }
        std::string grapheme;
        for (size_t k = g; k < next; ++k)
        {
            appendUtf8(grapheme, cps[k]);
        }
        if (grapheme.size() >= 6 || !transform(grapheme, mapped))
        {
            for (size_t k = g; k < next; ++k) // character by character
            {
                std::string one;
                appendUtf8(one, cps[k]);
                if (!transform(one, mapped))
                {
                    mapped += one;
                }
            }
        }
        g = next;
    }
    std::string collapsed;
    collapsed.reserve(mapped.size());
    for (size_t i = 0; i < mapped.size(); ++i)
    {
        if (mapped[i] == ' ' && i + 1 < mapped.size() && mapped[i + 1] == ' ')
        {
            continue; // keep the last space of a run
        }
        collapsed.push_back(mapped[i]);
    }
    return collapsed;
}

std::string DebertaTokenizer::normalize(std::string const& segment) const
{
    return mMode == Normalization::kTransformers4 ? normalizeCharsmap(segment) : normalizeSegment(segment);
}

void DebertaTokenizer::pretokenizeAndSegment(std::string const& normalized, std::vector<int64_t>& out) const
{
    if (normalized.empty())
    {
        return;
    }
    std::string text;
    for (char c : normalized)
    {
        if (c == ' ')
        {
            text += kMetaspace;
        }
        else
        {
            text.push_back(c);
        }
    }
    if (text.compare(0, 3, kMetaspace) != 0)
    {
        text.insert(0, kMetaspace);
    }
    // Words start at every "▁".
    size_t begin = 0;
    while (begin < text.size())
    {
        size_t next = text.find(kMetaspace, begin + 3);
        if (next == std::string::npos)
        {
            next = text.size();
        }
        std::vector<int64_t> word;
        viterbi(text.substr(begin, next - begin), word);
        out.insert(out.end(), word.begin(), word.end());
        begin = next;
    }
}

template <typename OnText, typename OnId>
void DebertaTokenizer::splitSpecials(std::string const& text, bool normalized, OnText onText, OnId onId) const
{
    size_t pos = 0;
    while (pos <= text.size())
    {
        size_t hit = std::string::npos;
        size_t hitLen = 0;
        int64_t hitId = -1;
        for (SpecialToken const& special : mSpecialTokens)
        {
            if (special.normalized != normalized)
            {
                continue;
            }
            size_t const at = text.find(special.text, pos);
            if (at != std::string::npos && (at < hit || (at == hit && special.text.size() > hitLen)))
            {
                hit = at;
                hitLen = special.text.size();
                hitId = special.id;
            }
        }
        onText(text.substr(pos, hit == std::string::npos ? std::string::npos : hit - pos));
        if (hit == std::string::npos)
        {
            break;
        }
        onId(hitId);
        pos = hit + hitLen;
    }
}

std::vector<int64_t> DebertaTokenizer::tokenize(std::string const& text) const
{
    std::vector<int64_t> ids;
    if (mMode == Normalization::kSentencePiece)
    {
        std::vector<int> pieces;
        auto const status = mProcessor->Encode(text, &pieces);
        if (!status.ok())
        {
            throw std::runtime_error("SentencePiece cannot encode the text: " + status.ToString());
        }
        ids.assign(pieces.begin(), pieces.end());
        return ids;
    }
    // As the tokenizers library does: special tokens written in the text are kept whole, first those matched in the
    // raw text, then, in each normalized segment between them, those matched after normalization.
    auto const push = [&](int64_t id) { ids.push_back(id); };
    splitSpecials(text, false, [&](std::string const& segment) {
        splitSpecials(normalize(segment), true,
            [&](std::string const& piece) { pretokenizeAndSegment(piece, ids); }, push);
    }, push);
    return ids;
}

Encoding DebertaTokenizer::encode(std::string const& text, std::string const* textPair, int32_t maxLength) const
{
    size_t const specials = textPair != nullptr ? 3 : 2;
    if (maxLength < static_cast<int32_t>(specials))
    {
        throw std::invalid_argument("max length " + std::to_string(maxLength) + " cannot hold the "
            + std::to_string(specials) + " special tokens");
    }
    size_t const budget = static_cast<size_t>(maxLength) - specials;
    std::vector<int64_t> a = tokenize(text);
    std::vector<int64_t> b;
    if (textPair != nullptr)
    {
        b = tokenize(*textPair);
        auto const [keepA, keepB] = truncatedPairLengths(a.size(), b.size(), budget);
        a.resize(keepA);
        b.resize(keepB);
    }
    else if (a.size() > budget)
    {
        a.resize(budget);
    }
    Encoding e;
    e.inputIds.push_back(mClsId);
    e.inputIds.insert(e.inputIds.end(), a.begin(), a.end());
    e.inputIds.push_back(mSepId);
    e.tokenTypeIds.assign(e.inputIds.size(), 0);
    if (textPair != nullptr)
    {
        e.inputIds.insert(e.inputIds.end(), b.begin(), b.end());
        e.inputIds.push_back(mSepId);
        e.tokenTypeIds.resize(e.inputIds.size(), 1);
    }
    e.attentionMask.assign(e.inputIds.size(), 1);
    return e;
}

void DebertaTokenizer::padBatch(std::vector<Encoding>& batch) const
{
    size_t longest = 0;
    for (auto const& e : batch)
    {
        longest = std::max(longest, e.inputIds.size());
    }
    for (auto& e : batch)
    {
        e.inputIds.resize(longest, mPadId);
        e.tokenTypeIds.resize(longest, 0);
        e.attentionMask.resize(longest, 0);
    }
}

} // namespace runtime
} // namespace debx
