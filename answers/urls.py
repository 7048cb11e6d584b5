from django.urls import path

from . import views

app_name = "answers"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.health, name="health"),
]
