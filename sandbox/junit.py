"""`probe --junit FILE`: the escape battery as JUnit XML, one test case per attempt.

CI systems (GitLab, Jenkins, GitHub's test reporters) read this format: an escape is a
failure, an attempt that could not be made is an error, and an attempt the policy allows
that did not work is a passing case with its detail in system-out.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .probe.result import ProbeResult


def probe_junit(result: ProbeResult, policy: str) -> str:
    """The probe's attempts as a JUnit XML document (one testsuite)."""
    suite = ET.Element("testsuite", name=f"CleanCoin-sandbox probe {policy}",
                       tests=str(len(result.attempts)),
                       failures=str(len(result.escapes)),
                       errors=str(sum(1 for a in result.attempts if a.outcome == "error")),
                       skipped="0")
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="policy", value=policy)
    ET.SubElement(props, "property", name="kernel", value=result.report.kernel)
    ET.SubElement(props, "property", name="seccomp_sha256", value=result.report.seccomp_sha256)
    for attempt in result.attempts:
        case = ET.SubElement(suite, "testcase", classname=f"probe.{policy}", name=attempt.name)
        text = (f"{attempt.description}\nexpected: {attempt.expected}\noutcome: {attempt.outcome}\n"
                f"detail: {attempt.detail}\nwhy: {attempt.reason}")
        if attempt.escaped:
            failure = ET.SubElement(case, "failure", type="escape",
                                    message=f"escaped: {attempt.detail}"[:500])
            failure.text = text
        elif attempt.outcome == "error":
            error = ET.SubElement(case, "error", type="error", message=attempt.detail[:500])
            error.text = text
        else:
            ET.SubElement(case, "system-out").text = text
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
