"""Rule analyze: segment a reconstruction into particles and measure every shell."""

from edxtomo.analyze import analyze_specimen, write_analysis
from edxtomo.options import AnalyzeOptions
from edxtomo.runtime import rule_context

with rule_context(snakemake.log[0], snakemake.threads):
    options = AnalyzeOptions.model_validate(snakemake.params.options)
    write_analysis(analyze_specimen(snakemake.input[0], options), snakemake.output[0])
