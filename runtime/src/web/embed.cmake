# embed.cmake — writes a file's bytes as a C array, so a page the web unit serves stays an HTML
# file in the tree (edited as HTML, no build step of its own) and is compiled into the library:
#
#   cmake -DIN=page.html -DOUT=page_html.h -DNAME=page_html -P embed.cmake
#
# OUT holds `static const unsigned char NAME[] = {..., 0x00};` (NUL-ended; sizeof NAME - 1 is the
# file's length). Written only when it changes, so an unchanged page rebuilds nothing.
foreach(v IN ITEMS IN OUT NAME)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "embed.cmake: -D${v}=... is required")
  endif()
endforeach()
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x..,){16})" "\\1\n" bytes "${bytes}")
get_filename_component(from "${IN}" NAME)
file(WRITE "${OUT}.tmp"
  "/* ${NAME}: ${from}, embedded by runtime/src/web/embed.cmake at build time. Do not edit. */\n"
  "static const unsigned char ${NAME}[] = {\n${bytes}0x00};\n")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different "${OUT}.tmp" "${OUT}")
file(REMOVE "${OUT}.tmp")
