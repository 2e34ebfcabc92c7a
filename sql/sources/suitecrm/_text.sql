{#- `decoded(column)`: text as the user typed it. SuiteCRM stores text through to_html()
    (salesagility/SuiteCRM include/utils/db_utils.php, $toHTML): " < > ' become &quot; &lt;
    &gt; &#039; (and & stays as it is) -#}
{% macro decoded(column) -%}
REPLACE(REPLACE(REPLACE(REPLACE({{ column }}, '&quot;', '"'), '&lt;', '<'), '&gt;', '>'),
        '&#039;', '''')
{%- endmacro %}
