/*
 * debx runtime: DeBERTa tokenizer (see tokenizer.h for the pipeline).
 */
#include "tokenizer.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <stdexcept>

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

} // namespace

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

DebertaTokenizer::DebertaTokenizer(std::string const& spmModelPath, Normalization mode)
    : mProcessor(std::make_unique<sentencepiece::SentencePieceProcessor>())
    , mMode(mode)
{
    auto const status = mProcessor->Load(spmModelPath);
    if (!status.ok())
    {
        throw std::runtime_error(spmModelPath + ": cannot load SentencePiece model (" + status.ToString() + ")");
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
            mSpecialTokens.emplace_back(piece, id);
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
        mSpecialTokens.emplace_back("[MASK]", mMaskId);
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

void DebertaTokenizer::tokenizeSegment(std::string const& segment, std::vector<int64_t>& out) const
{
    std::string const normalized = normalizeSegment(segment);
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
    // Special tokens written in the text are kept whole; the text between them is tokenized segment by segment.
    size_t pos = 0;
    while (pos <= text.size())
    {
        size_t hit = std::string::npos;
        size_t hitLen = 0;
        int64_t hitId = -1;
        for (auto const& [token, id] : mSpecialTokens)
        {
            size_t const at = text.find(token, pos);
            if (at != std::string::npos && (at < hit || (at == hit && token.size() > hitLen)))
            {
                hit = at;
                hitLen = token.size();
                hitId = id;
            }
        }
        tokenizeSegment(text.substr(pos, hit == std::string::npos ? std::string::npos : hit - pos), ids);
        if (hit == std::string::npos)
        {
            break;
        }
        ids.push_back(hitId);
        pos = hit + hitLen;
    }
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
