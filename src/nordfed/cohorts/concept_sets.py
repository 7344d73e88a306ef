"""Concept sets → SQL that resolves them against the site's vocabulary (descendants, mapped, exclusions)."""

from __future__ import annotations

from collections.abc import Sequence

from nordfed.cohorts.circe import ConceptSet, ConceptSetItem


def _ids(items: Sequence[ConceptSetItem]) -> str:
    return ", ".join(str(int(i.concept_id)) for i in items)


def _expand_sql(items: Sequence[ConceptSetItem]) -> str:
    """Concept ids of ``items``: the concepts themselves, descendants where flagged, then source concepts mapped
    to any of those where flagged (Circe's includeMapped)."""
    parts = [f"SELECT concept_id FROM (VALUES {', '.join(f'({int(i.concept_id)})' for i in items)}) AS v(concept_id)"]
    desc = [i for i in items if i.include_descendants]
    if desc:
        parts.append(f"SELECT descendant_concept_id AS concept_id FROM concept_ancestor "
                     f"WHERE ancestor_concept_id IN ({_ids(desc)})")
    base = " UNION ".join(parts)
    mapped = [i for i in items if i.include_mapped]
    if not mapped:
        return base
    mapped_targets = [f"SELECT concept_id FROM (VALUES {', '.join(f'({int(i.concept_id)})' for i in mapped)}) "
                      f"AS m(concept_id)"]
    mdesc = [i for i in mapped if i.include_descendants]
    if mdesc:
        mapped_targets.append(f"SELECT descendant_concept_id FROM concept_ancestor "
                              f"WHERE ancestor_concept_id IN ({_ids(mdesc)})")
    return (f"{base} UNION SELECT cr.concept_id_1 AS concept_id FROM concept_relationship cr "
            f"WHERE cr.relationship_id = 'Maps to' AND cr.concept_id_2 IN ({' UNION '.join(mapped_targets)})")


def concept_set_sql(cs: ConceptSet) -> str:
    """``SELECT codeset_id, concept_id`` for one concept set: included concepts minus excluded ones."""
    include = [i for i in cs.items if not i.is_excluded]
    exclude = [i for i in cs.items if i.is_excluded]
    if not include:
        return f"SELECT CAST({cs.id} AS INTEGER) AS codeset_id, CAST(NULL AS INTEGER) AS concept_id WHERE 1 = 0"
    sql = f"SELECT DISTINCT CAST({cs.id} AS INTEGER) AS codeset_id, inc.concept_id FROM ({_expand_sql(include)}) inc"
    if exclude:
        sql += f" WHERE inc.concept_id NOT IN (SELECT concept_id FROM ({_expand_sql(exclude)}) exc)"
    return sql


def codesets_sql(concept_sets: Sequence[ConceptSet]) -> str:
    """One ``(codeset_id, concept_id)`` relation for all concept sets of a definition."""
    if not concept_sets:
        return "SELECT CAST(NULL AS INTEGER) AS codeset_id, CAST(NULL AS INTEGER) AS concept_id WHERE 1 = 0"
    return " UNION ALL ".join(f"SELECT * FROM ({concept_set_sql(cs)}) cs_{k}" for k, cs in enumerate(concept_sets))
