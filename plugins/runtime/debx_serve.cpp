/*
 * debx_serve: JSON-lines inference with a TensorRT plan, for any service to wrap.
 *
 *   debx_serve --plan model.plan --spm spm.model [--plugins libdebx_plugins.so]... [--max-length 512]
 *              [--batch-size 8] [--pooling cls|mean]
 *
 * stdin: {"text": ..., "text_pair": ...} per line. Lines are grouped into batches of --batch-size (the last one may
 * be smaller), tokenized exactly like transformers' DebertaV2Tokenizer, right-padded, run, and answered in order:
 *   {"logits": [...]}      when the engine has a `logits` output (classification / regression heads)
 *   {"embedding": [...]}   otherwise, from `last_hidden_state` pooled over the real tokens (--pooling)
 *   {"error": "..."}       for a line that could not be processed
 */
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine.h"
#include "requests.h"
#include "tokenizer.h"

namespace
{

struct Options
{
    std::string plan;
    std::string spm;
    std::vector<std::string> plugins;
    int32_t maxLength = 512;
    size_t batchSize = 8;
    bool meanPooling = false;
};

[[noreturn]] void usage(char const* error)
{
    if (error != nullptr)
    {
        std::fprintf(stderr, "debx_serve: error: %s\n", error);
    }
    std::fprintf(stderr,
        "usage: debx_serve --plan model.plan --spm spm.model [--plugins libdebx_plugins.so]... [--max-length N] "
        "[--batch-size N] [--pooling cls|mean] < requests.jsonl\n");
    std::exit(error != nullptr ? 2 : 0);
}

Options parseArgs(int argc, char** argv)
{
    Options o;
    for (int i = 1; i < argc; ++i)
    {
        std::string const arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc)
            {
                usage(("missing value for " + arg).c_str());
            }
            return argv[++i];
        };
        if (arg == "--plan")
        {
            o.plan = value();
        }
        else if (arg == "--spm")
        {
            o.spm = value();
        }
        else if (arg == "--plugins")
        {
            o.plugins.push_back(value());
        }
        else if (arg == "--max-length")
        {
            o.maxLength = std::atoi(value().c_str());
        }
        else if (arg == "--batch-size")
        {
            int const n = std::atoi(value().c_str());
            if (n < 1)
            {
                usage("--batch-size must be >= 1");
            }
            o.batchSize = static_cast<size_t>(n);
        }
        else if (arg == "--pooling")
        {
            std::string const v = value();
            if (v != "cls" && v != "mean")
            {
                usage("--pooling must be cls or mean");
            }
            o.meanPooling = v == "mean";
        }
        else if (arg == "-h" || arg == "--help")
        {
            usage(nullptr);
        }
        else
        {
            usage(("unknown argument " + arg).c_str());
        }
    }
    if (o.plan.empty() || o.spm.empty())
    {
        usage("--plan and --spm are required");
    }
    if (o.maxLength < 3)
    {
        usage("--max-length must be >= 3");
    }
    return o;
}

//! Row r of a (B, ...) output as JSON: logits as they are, hidden states pooled over the real tokens.
nlohmann::json answer(debx::runtime::Output const& out, debx::runtime::Encoding const& row, size_t r, bool mean)
{
    if (out.shape.size() == 2) // (B, C): logits or a pooled embedding
    {
        size_t const width = static_cast<size_t>(out.shape[1]);
        std::vector<float> values(out.values.begin() + r * width, out.values.begin() + (r + 1) * width);
        return out.name == "logits" ? nlohmann::json{{"logits", values}} : nlohmann::json{{"embedding", values}};
    }
    if (out.shape.size() != 3)
    {
        return nlohmann::json{{"error", "output " + out.name + " has an unexpected rank"}};
    }
    size_t const seq = static_cast<size_t>(out.shape[1]);
    size_t const hidden = static_cast<size_t>(out.shape[2]);
    float const* base = out.values.data() + r * seq * hidden;
    std::vector<float> pooled(hidden, 0.0F);
    if (!mean)
    {
        pooled.assign(base, base + hidden); // [CLS]
    }
    else
    {
        float count = 0.0F;
        for (size_t t = 0; t < seq; ++t)
        {
            if (row.attentionMask[t] == 0)
            {
                continue;
            }
            count += 1.0F;
            for (size_t c = 0; c < hidden; ++c)
            {
                pooled[c] += base[t * hidden + c];
            }
        }
        for (float& v : pooled)
        {
            v /= count > 0.0F ? count : 1.0F;
        }
    }
    return nlohmann::json{{"embedding", pooled}};
}

void flush(debx::runtime::DebertaTokenizer const& tok, debx::runtime::TensorRTEngine& engine,
    std::vector<std::string> const& lines, Options const& o)
{
    std::vector<debx::runtime::Encoding> rows;
    std::vector<std::string> replies(lines.size());
    std::vector<size_t> rowOf(lines.size(), SIZE_MAX);
    for (size_t n = 0; n < lines.size(); ++n)
    {
        try
        {
            debx::runtime::Request const r = debx::runtime::parseRequest(lines[n]);
            rows.push_back(tok.encode(r.text, r.textPair ? &*r.textPair : nullptr, o.maxLength));
            rowOf[n] = rows.size() - 1;
        }
        catch (std::exception const& e)
        {
            replies[n] = debx::runtime::errorLine(e.what());
        }
    }
    if (!rows.empty())
    {
        tok.padBatch(rows);
        try
        {
            std::vector<debx::runtime::Output> const outputs = engine.run(rows);
            debx::runtime::Output const* chosen = nullptr;
            for (auto const& out : outputs)
            {
                if (chosen == nullptr || out.name == "logits")
                {
                    chosen = &out;
                }
            }
            for (size_t n = 0; n < lines.size(); ++n)
            {
                if (rowOf[n] != SIZE_MAX)
                {
                    replies[n] = answer(*chosen, rows[rowOf[n]], rowOf[n], o.meanPooling).dump();
                }
            }
        }
        catch (std::exception const& e)
        {
            for (size_t n = 0; n < lines.size(); ++n)
            {
                if (rowOf[n] != SIZE_MAX)
                {
                    replies[n] = debx::runtime::errorLine(e.what());
                }
            }
        }
    }
    for (std::string const& reply : replies)
    {
        std::cout << reply << '\n';
    }
    std::cout.flush();
}

} // namespace

int main(int argc, char** argv)
{
    Options const o = parseArgs(argc, argv);
    std::unique_ptr<debx::runtime::DebertaTokenizer> tok;
    std::unique_ptr<debx::runtime::TensorRTEngine> engine;
    try
    {
        tok = std::make_unique<debx::runtime::DebertaTokenizer>(o.spm);
        engine = std::make_unique<debx::runtime::TensorRTEngine>(o.plan, o.plugins);
    }
    catch (std::exception const& e)
    {
        std::fprintf(stderr, "debx_serve: error: %s\n", e.what());
        return 2;
    }
    std::vector<std::string> pending;
    std::string line;
    while (std::getline(std::cin, line))
    {
        pending.push_back(line);
        if (pending.size() == o.batchSize)
        {
            flush(*tok, *engine, pending, o);
            pending.clear();
        }
    }
    if (!pending.empty())
    {
        flush(*tok, *engine, pending, o);
    }
    return 0;
}
